//! The node's own show commands (not SD-WAN's, see `sdwan::render`): plain
//! row structs the owner fills from live state, and pure renderers of the
//! IOS text. The `--json` reply is serde of the same rows, so text and JSON
//! cannot drift apart, and every layout is tested on hand-built rows
//! without a daemon.
use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::Value;

pub mod crypto_sa;
pub mod ikev2;
pub mod proposals;
pub mod qfp;
pub mod system;
pub mod trace;

/// A show's reply: the IOS text `render` makes of `rows`, and the
/// `--json` value, serde of the same rows.
pub fn reply<R: Serialize>(rows: &R, render: impl FnOnce(&R) -> String) -> (String, Value) {
    let value = serde_json::to_value(rows).unwrap_or(Value::Null);
    (render(rows), value)
}

/// Named counters in the order the text lists them; JSON: an object of
/// `name: value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(pub Vec<(String, u64)>);

impl Counters {
    /// Counters from (name, value) pairs.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> Counters {
        Counters(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// `name value, name value, ...`.
    pub fn inline(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}
