//! The signal JSON both sides exchange: `{"type":"offer"|"answer","sdp":"..."}`.

use ::webrtc::peer_connection::{RTCSdpType, RTCSessionDescription};
use serde::{Deserialize, Serialize};

use super::WebRtcError;

#[derive(Serialize, Deserialize)]
struct SignalJson {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

/// Removes `a=ice-options:trickle` lines, as simple-peer does for non-trickle peers.
pub(super) fn strip_trickle(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if line.trim_end() != "a=ice-options:trickle" {
            out.push_str(line);
        }
    }
    out
}

/// Rewrites `a=setup:actpass` to `a=setup:active` in an offer (see
/// [`super::WebRtcConfig::offer_dtls_client`]). Our own connection is not told: it takes its
/// DTLS role from the answer, which must then say `passive`.
pub(super) fn offer_setup_active(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if line.trim_end() == "a=setup:actpass" {
            out.push_str("a=setup:active");
            out.push_str(&line["a=setup:actpass".len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The first `a=setup:` value of an SDP (`actpass`, `active`, `passive`), if any.
pub(super) fn setup_role(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=setup:"))
}

/// Encodes a local description as signal JSON, without trickle lines and, when
/// `dtls_active_offer` is set and this is an offer, with `a=setup:active`.
pub(super) fn encode_signal(
    desc: &RTCSessionDescription,
    dtls_active_offer: bool,
) -> Result<String, WebRtcError> {
    let kind = match desc.sdp_type {
        RTCSdpType::Offer => "offer",
        RTCSdpType::Answer => "answer",
        other => {
            return Err(WebRtcError::WebRtc(format!(
                "unexpected local description type {other}"
            )));
        }
    };
    let mut sdp = strip_trickle(&desc.sdp);
    if dtls_active_offer && desc.sdp_type == RTCSdpType::Offer {
        sdp = offer_setup_active(&sdp);
    }
    serde_json::to_string(&SignalJson {
        kind: kind.to_owned(),
        sdp,
    })
    .map_err(|e| WebRtcError::WebRtc(e.to_string()))
}

/// Decodes signal JSON of the wanted type.
pub(super) fn decode_signal(
    json: &str,
    want: RTCSdpType,
) -> Result<RTCSessionDescription, WebRtcError> {
    let s: SignalJson =
        serde_json::from_str(json).map_err(|e| WebRtcError::InvalidSignal(e.to_string()))?;
    let desc = match (want, s.kind.as_str()) {
        (RTCSdpType::Offer, "offer") => RTCSessionDescription::offer(s.sdp),
        (RTCSdpType::Answer, "answer") => RTCSessionDescription::answer(s.sdp),
        (_, other) => {
            return Err(WebRtcError::InvalidSignal(format!(
                "expected type {want}, got {other:?}"
            )));
        }
    };
    desc.map_err(|e| WebRtcError::InvalidSignal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_trickle_lines_only() {
        let sdp = "v=0\r\na=ice-options:trickle\r\na=ice-ufrag:x\r\na=ice-options:trickle\n";
        assert_eq!(strip_trickle(sdp), "v=0\r\na=ice-ufrag:x\r\n");
    }

    #[test]
    fn active_offer_rewrites_only_actpass() {
        let sdp = "v=0\r\na=setup:actpass\r\na=setup:passive\r\na=x\n";
        assert_eq!(
            offer_setup_active(sdp),
            "v=0\r\na=setup:active\r\na=setup:passive\r\na=x\n"
        );
    }

    #[test]
    fn finds_the_setup_role() {
        assert_eq!(
            setup_role("v=0\r\na=setup:active\r\na=setup:passive\r\n"),
            Some("active")
        );
        assert_eq!(setup_role("v=0\r\n"), None);
    }

    #[test]
    fn bad_signals_are_errors() {
        assert!(decode_signal("not json", RTCSdpType::Offer).is_err());
        assert!(decode_signal(r#"{"type":"answer","sdp":"v=0"}"#, RTCSdpType::Offer).is_err());
        assert!(decode_signal(r#"{"type":"offer","sdp":"garbage"}"#, RTCSdpType::Offer).is_err());
    }
}
