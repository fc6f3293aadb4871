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

id_type!(
    /// A security symbol, e.g. `AAPL` or `BRK.B`.
    SecurityId
);
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
