//! The SD-WAN edge's request and clear commands, on the owner: each
//! finds the peers it rebuilds in one walk of the tunnel registry, their
//! SAs going in one batch ([`Owner::sdwan_flap_peers`]).
use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use super::Owner;

impl Owner {
    /// `request platform software sdwan security ipsec-rekey`: a new
    /// inbound SPI and key on every local TLOC now, advertised through the
    /// controller; the old SAs still decrypt for the grace time.
    pub(crate) fn sdwan_ipsec_rekey(&mut self) -> Result<(String, Value)> {
        let s = self.sdwan.as_mut().ok_or_else(|| {
            anyhow!("this node is not an SD-WAN edge (no [sdwan] section in its config)")
        })?;
        let before: Vec<(String, Option<u32>)> = s
            .tlocs
            .iter()
            .map(|t| (t.name.clone(), s.edge.local_spi(&t.color)))
            .collect();
        let actions = s.edge.ipsec_rekey(self.now);
        self.sdwan_omp_actions(actions);
        let s = self.sdwan.as_ref().expect("checked above");
        let mut text = String::new();
        let mut list = Vec::new();
        for ((name, old), t) in before.iter().zip(&s.tlocs) {
            let new = s.edge.local_spi(&t.color);
            text.push_str(&format!(
                "{name} ({}): inbound SPI 0x{:08X} -> 0x{:08X}; advertised to the controller\n",
                t.color,
                old.unwrap_or(0),
                new.unwrap_or(0)
            ));
            list.push(json!({"tunnel": name, "color": t.color, "old_spi": old, "new_spi": new}));
        }
        tracing::info!("ipsec-rekey: {}", text.trim_end().replace('\n', "; "));
        Ok((text, json!({ "rekeyed": list })))
    }

    /// `clear sdwan omp all`: every OMP route withdrawn and relearned, so
    /// every SD-WAN tunnel is rebuilt and every BFD session flaps.
    pub(crate) fn sdwan_clear_omp(&mut self) -> Result<(String, Value)> {
        self.edge()?;
        let n = self.sdwan_flap_peers(None);
        let s = self.sdwan.as_mut().expect("checked above");
        let actions = s.edge.clear_omp(self.now);
        self.sdwan_omp_actions(actions);
        tracing::info!("clear sdwan omp all: {n} SD-WAN peer(s) rebuilt");
        Ok((
            format!(
                "OMP routes withdrawn and relearned; {n} SD-WAN tunnel peer(s) rebuilt, their BFD sessions flap\n"
            ),
            json!({ "rebuilt_peers": n }),
        ))
    }

    /// `request platform software sdwan port_hop COLOR`: that TLOC moves to
    /// its next port; its control connection and its BFD sessions flap.
    pub(crate) fn sdwan_port_hop(&mut self, color: &str) -> Result<(String, Value)> {
        let s = self.edge()?;
        let Some(t) = s.tloc(color) else {
            let colors: Vec<&str> = s.tlocs.iter().map(|t| t.color.as_str()).collect();
            return Err(anyhow!(
                "no local TLOC has color {color}: give one of {}",
                colors.join(", ")
            ));
        };
        let (name, old) = (t.name.clone(), t.port);
        self.sdwan_flap_peers(Some(color));
        let s = self.sdwan.as_mut().expect("checked above");
        let actions = s.edge.port_hop(self.now, color).expect("the color exists");
        s.last_port_hop = Some(self.now);
        self.sdwan_omp_actions(actions);
        let new = self.edge()?.tloc(color).map_or(0, |t| t.port);
        Ok((
            format!(
                "{name} ({color}): TLOC port {old} -> {new}; control connection and BFD sessions of {color} flap\n"
            ),
            json!({ "tunnel": name, "color": color, "old_port": old, "new_port": new }),
        ))
    }

    /// `clear sdwan control connection-history` on the edge.
    pub(crate) fn sdwan_clear_control_history(&mut self) -> Result<(String, Value)> {
        self.edge()?;
        self.sdwan
            .as_mut()
            .expect("checked above")
            .edge
            .clear_history();
        Ok((String::new(), json!({})))
    }

    /// `clear sdwan control connections`: every control connection and
    /// every BFD session flaps; everything is relearned.
    pub(crate) fn sdwan_clear_control(&mut self) -> Result<(String, Value)> {
        let n = self.edge()?.tlocs.len();
        self.sdwan_flap_peers(None);
        let s = self.sdwan.as_mut().expect("checked above");
        let actions = s.edge.clear_control_connections(self.now);
        self.sdwan_omp_actions(actions);
        Ok((
            format!(
                "{n} control connection(s) and every BFD session flapped; routes are relearned\n"
            ),
            json!({ "flapped_connections": n }),
        ))
    }
}
