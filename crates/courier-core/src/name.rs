//! Validated namespace and queue names.
//!
//! Names appear in URLs, SQL parameters and log lines, so they are restricted to
//! `[a-z0-9][a-z0-9._-]{0,127}`: no separators, no path tricks, nothing empty.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest name accepted, in bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// "namespace" or "queue name".
        what: &'static str,
    },
    /// The name is longer than [`NAME_BYTES_MAX`].
    #[error("{what} is {len} bytes long; the limit is {NAME_BYTES_MAX}")]
    TooLong {
        /// "namespace" or "queue name".
        what: &'static str,
        /// Length of the refused name in bytes.
        len: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error("{what} {name:?} is invalid: use [a-z0-9][a-z0-9._-]*")]
    BadCharacter {
        /// "namespace" or "queue name".
        what: &'static str,
        /// The refused name, for the error message.
        name: String,
    },
}

fn validate(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong { what, len: name.len() });
    }
    let bytes = name.as_bytes();
    let first_ok = bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit();
    let rest_ok = bytes[1..]
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::BadCharacter {
            what,
            name: name.chars().take(NAME_BYTES_MAX).collect(),
        })
    }
}

macro_rules! validated_name {
    ($ty:ident, $what:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name` and wraps it.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate($what, &name)?;
                Ok(Self(name))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    Namespace,
    "namespace",
    "A validated namespace: a tenant or application boundary that groups queues."
);
validated_name!(
    QueueName,
    "queue name",
    "A validated queue name, unique within its namespace."
);

/// A fully qualified queue: namespace plus name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueRef {
    /// The namespace the queue lives in.
    pub namespace: Namespace,
    /// The queue's name within the namespace.
    pub name: QueueName,
}

impl QueueRef {
    /// Validates both parts and builds a queue reference.
    pub fn parse(namespace: &str, name: &str) -> Result<Self, NameError> {
        Ok(Self {
            namespace: Namespace::new(namespace)?,
            name: QueueName::new(name)?,
        })
    }
}

impl fmt::Display for QueueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for QueueRef {
    type Err = NameError;
    /// Parses `namespace/queue`; a bare `queue` lands in the `default` namespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, q)) => Self::parse(ns, q),
            None => Self::parse("default", s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(QueueName::new(input).is_ok(), ok, "input {input:?}");
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        check("orders", true);
        check("0", true);
        check("a.b_c-d", true);
        check(&"a".repeat(128), true);
        check(&"a".repeat(129), false);
        check(&"a".repeat(200), false);
        check("", false);
        check("../x", false);
        check("a/b", false);
        check(".hidden", false);
        check("-x", false);
        check("_x", false);
        check("Orders", false);
        check("ordérs", false);
        check("or ders", false);
        check("q\0", false);
    }

    #[test]
    fn queue_ref_parses_namespace_and_default() {
        let q: QueueRef = "shop/orders".parse().unwrap();
        assert_eq!(q.to_string(), "shop/orders");
        let q: QueueRef = "orders".parse().unwrap();
        assert_eq!(q.namespace.as_str(), "default");
        assert!("shop/../x".parse::<QueueRef>().is_err());
    }
}
