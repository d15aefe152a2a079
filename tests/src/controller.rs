//! A running `xdpsec controller` in a namespace, for the SD-WAN tests.
use std::ops::{Deref, DerefMut};

use anyhow::Result;

use crate::{Daemon, Kind};

/// `xdpsec controller`.
const CONTROLLER: Kind = Kind {
    subcommand: "controller",
    name: "xdpsec controller",
    tag: "controller",
    file: "controller",
    log_filter: "debug",
    probe: "show version",
    state_dir: false,
};

/// A running `xdpsec controller`; stopped with SIGINT on drop. Its socket,
/// log, CLI and stop are a [`Daemon`]'s.
pub struct Controller(Daemon);

impl Controller {
    /// Write `config` (with `{socket}` replaced by a fresh socket path) and
    /// start `xdpsec controller` in `ns`; wait until its control socket
    /// answers.
    pub fn start(ns: &str, config: &str) -> Result<Controller> {
        Daemon::spawn(ns, &CONTROLLER, config, &[]).map(Controller)
    }
}

impl Deref for Controller {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl DerefMut for Controller {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}
