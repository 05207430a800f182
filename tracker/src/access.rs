//! info_hash allow and deny lists.
//!
//! The list file holds one info_hash per line as 40 hex digits; blank lines and text after `#`
//! are ignored. A malformed line is an error naming the file and line, and the previous list
//! stays in force (a reload never opens a private tracker by accident).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::wire::InfoHash;

/// How the list is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Every info_hash is allowed; no file is read.
    #[default]
    Off,
    /// Only listed info_hashes are allowed.
    Allow,
    /// Listed info_hashes are refused.
    Deny,
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessMode::Off => "off",
            AccessMode::Allow => "allow",
            AccessMode::Deny => "deny",
        })
    }
}

/// A mode and its set of info_hashes.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    mode: AccessMode,
    hashes: HashSet<InfoHash>,
}

impl AccessList {
    /// A list in `mode` holding `hashes`.
    pub fn new(mode: AccessMode, hashes: impl IntoIterator<Item = InfoHash>) -> Self {
        AccessList {
            mode,
            hashes: hashes.into_iter().collect(),
        }
    }

    /// Whether announces for `h` are accepted.
    pub fn allows(&self, h: &InfoHash) -> bool {
        match self.mode {
            AccessMode::Off => true,
            AccessMode::Allow => self.hashes.contains(h),
            AccessMode::Deny => !self.hashes.contains(h),
        }
    }

    /// Number of listed hashes.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the list holds no hash.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The mode.
    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    /// Parses list text; `origin` names the file in errors.
    pub fn parse(mode: AccessMode, text: &str, origin: &str) -> Result<Self, String> {
        let mut hashes = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let h = InfoHash::from_hex(line).ok_or_else(|| {
                format!(
                    "{origin}:{}: expected an info_hash as 40 hex digits, got {line:?}",
                    i + 1
                )
            })?;
            hashes.insert(h);
        }
        Ok(AccessList { mode, hashes })
    }

    /// Reads and parses a list file.
    pub fn load(mode: AccessMode, path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read access list {}: {e}", path.display()))?;
        Self::parse(mode, &text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_lines_with_comments_and_names_bad_lines() {
        let text = "# private swarms\n6798c2890ae4850e42e37a0faabc217c7b9a157e  # fixture\n\n";
        let l = AccessList::parse(AccessMode::Allow, text, "list.txt").expect("parses");
        assert_eq!(l.len(), 1);
        let h = InfoHash::from_hex("6798c2890ae4850e42e37a0faabc217c7b9a157e").expect("hex");
        assert!(l.allows(&h));
        assert!(!l.allows(&InfoHash::default()));
        let deny = AccessList::parse(AccessMode::Deny, text, "list.txt").expect("parses");
        assert!(!deny.allows(&h));
        let err = AccessList::parse(AccessMode::Allow, "abc\n", "list.txt").expect_err("bad line");
        assert!(err.starts_with("list.txt:1:"), "{err}");
    }
}
