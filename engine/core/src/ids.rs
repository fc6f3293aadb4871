//! Identifier newtypes. Each is a plain string on the wire; the type keeps a
//! household id from being passed where a security id belongs.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}

/// A security symbol, e.g. `AAPL` or `BRK.B`.
///
/// Ordered, compared and hashed as its text, like the other ids. Most of a
/// re-plan is looking securities up in ordered maps, so it also keeps its
/// first 16 bytes packed big-endian into two integers (zero-padded): two
/// symbols that differ there are ordered by those integers alone, without
/// reaching the text, and symbols of up to 16 bytes never reach it. Padding
/// with zeros keeps the text's byte order: where one text ends inside the
/// head, the other either differs at a byte after it (which the head orders,
/// a zero against a byte never greater) or has zeros there, and the shorter
/// text comes first, as it does when the lengths decide.
#[derive(Clone, Default)]
pub struct SecurityId {
    head: [u64; 2],
    text: String,
}

impl SecurityId {
    pub fn new(s: impl Into<String>) -> Self {
        let text = s.into();
        Self { head: head_of(&text), text }
    }
    /// Makes this id `s`, keeping its text's buffer (a reader that decodes
    /// into the previous input's values).
    pub fn set(&mut self, s: &str) {
        self.text.clear();
        self.text.push_str(s);
        self.head = head_of(s);
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The first 16 bytes of `text`, zero-padded, as two big-endian integers.
fn head_of(text: &str) -> [u64; 2] {
    let mut bytes = [0u8; 16];
    let n = text.len().min(16);
    bytes[..n].copy_from_slice(&text.as_bytes()[..n]);
    let (a, b) = bytes.split_at(8);
    [u64::from_be_bytes(a.try_into().expect("8 bytes")), u64::from_be_bytes(b.try_into().expect("8 bytes"))]
}

impl PartialEq for SecurityId {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.text == other.text
    }
}

impl Eq for SecurityId {}

impl Ord for SecurityId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head.cmp(&other.head).then_with(|| {
            if self.text.len() <= 16 && other.text.len() <= 16 {
                self.text.len().cmp(&other.text.len())
            } else {
                self.text.as_bytes()[16.min(self.text.len())..].cmp(&other.text.as_bytes()[16.min(other.text.len())..])
            }
        })
    }
}

impl PartialOrd for SecurityId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for SecurityId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for SecurityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecurityId").field(&self.text).finish()
    }
}

impl fmt::Display for SecurityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for SecurityId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl Serialize for SecurityId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SecurityId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}
id_type!(
    /// A client household: one tax identity, one or more accounts.
    HouseholdId
);
id_type!(
    /// An account, unique within its household.
    AccountId
);
id_type!(
    /// A model portfolio published by a model provider.
    ModelId
);
id_type!(
    /// A deterministic order id derived from the decision that made the order.
    OrderId
);
id_type!(
    /// A client restriction, unique within its household.
    RestrictionId
);

#[cfg(test)]
mod tests {
    use super::SecurityId;
    use proptest::prelude::*;
    use std::hash::{BuildHasher, BuildHasherDefault};

    /// Texts from a few characters, zero and a two-byte one among them.
    fn text(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!['\0', '\u{1}', 'A', 'B', 'Z', '\u{7f}', 'é']), len)
            .prop_map(|cs| cs.into_iter().collect())
    }

    /// Two texts of up to 40 bytes with a common prefix of up to 24
    /// characters: they end inside or past the packed head, differ inside
    /// or after it, or only by trailing zeros.
    fn pair() -> impl Strategy<Value = (String, String)> {
        (text(0..24), text(0..8), text(0..8)).prop_map(|(p, x, y)| (format!("{p}{x}"), format!("{p}{y}")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// A security id is ordered, compared and hashed as its text.
        #[test]
        fn ordered_and_compared_as_its_text((a, b) in pair()) {
            let (x, y) = (SecurityId::new(a.clone()), SecurityId::new(b.clone()));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
            prop_assert_eq!(h.hash_one(&x) == h.hash_one(&y), h.hash_one(&a) == h.hash_one(&b));
            // Set in place from another id's text, it is that id.
            let mut z = SecurityId::new(b);
            z.set(&a);
            prop_assert_eq!(z.cmp(&y), a.as_str().cmp(y.as_str()));
            prop_assert!(z == x);
        }
    }

    #[test]
    fn trailing_zeros_and_long_texts_keep_the_text_order() {
        let ids =
            ["", "\0", "A", "A\0", "A\0\0", "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAA\0", "AAAAAAAAAAAAAAAAB", "AB", "B"];
        for w in ids.windows(2) {
            assert!(SecurityId::new(w[0]) < SecurityId::new(w[1]), "{:?} < {:?}", w[0], w[1]);
        }
    }
}
