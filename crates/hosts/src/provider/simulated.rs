//! The `simulated` provider: hosts that exist the moment they are asked
//! for. It remembers which hosts are up and how often each was launched,
//! so tests can check that nothing leaked or was launched twice, and it can
//! be told to fail calls. Whoever owns it may watch launches and
//! terminations (the binary starts a simulated agent for each launch).

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::{HostError, HostFuture, HostProvider, HostSpec};

/// What happened to a simulated host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    Launched(HostSpec),
    Terminated(HostSpec),
}

#[derive(Default)]
struct State {
    /// Hosts up now.
    up: BTreeMap<String, HostSpec>,
    /// Times each host id was brought up from down (more than 1 is a double launch).
    launches: BTreeMap<String, u32>,
    /// Calls to fail next, by action.
    fail_next: Vec<&'static str>,
}

#[derive(Default)]
pub struct Simulated {
    state: Mutex<State>,
    watcher: Mutex<Option<mpsc::UnboundedSender<Happened>>>,
}

impl Simulated {
    /// Sends every launch and termination to the returned receiver.
    pub fn watch(&self) -> mpsc::UnboundedReceiver<Happened> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        receiver
    }

    /// Hosts up now, by id.
    pub fn up(&self) -> Vec<String> {
        self.lock().up.keys().cloned().collect()
    }

    /// How often each host id was launched from down.
    pub fn launches(&self) -> BTreeMap<String, u32> {
        self.lock().launches.clone()
    }

    /// Makes the next call of `action` ("launch" or "terminate") fail.
    pub fn fail_next(&self, action: &'static str) {
        self.lock().fail_next.push(action);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tell(&self, happened: Happened) {
        if let Some(sender) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = sender.send(happened);
        }
    }

    fn act(&self, action: &'static str, host: &HostSpec) -> Result<(), HostError> {
        let happened = {
            let mut state = self.lock();
            if let Some(at) = state.fail_next.iter().position(|a| *a == action) {
                state.fail_next.remove(at);
                return Err(HostError::Injected {
                    action,
                    host_id: host.host_id.clone(),
                });
            }
            match action {
                "launch" if !state.up.contains_key(&host.host_id) => {
                    state.up.insert(host.host_id.clone(), host.clone());
                    *state.launches.entry(host.host_id.clone()).or_default() += 1;
                    Some(Happened::Launched(host.clone()))
                }
                "terminate" => state.up.remove(&host.host_id).map(Happened::Terminated),
                _ => None,
            }
        };
        if let Some(happened) = happened {
            self.tell(happened);
        }
        Ok(())
    }
}

impl HostProvider for Simulated {
    fn launch<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a> {
        Box::pin(async move { self.act("launch", host) })
    }

    fn terminate<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a> {
        Box::pin(async move { self.act("terminate", host) })
    }
}
