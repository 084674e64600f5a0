//! The threads that carry traffic: one single-threaded tokio runtime per
//! core, as nginx runs one worker process per core. Every worker accepts
//! from the same listening sockets, and a client connection, its requests
//! and the pooled connections to targets they use all stay on the worker
//! that accepted it: no wake-up crosses threads on the request path.
//! Configuration, health checks and metrics run on the embedding process's
//! own runtime.

use std::cell::Cell;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Worker threads at most, whatever is asked.
pub const WORKERS_MAX: usize = 256;

thread_local! {
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker this code runs on (0 off the workers).
pub fn current() -> usize {
    WORKER_INDEX.with(Cell::get)
}

pub struct Workers {
    handles: Vec<Handle>,
    // Dropping these ends the workers' runtimes.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = count.clamp(1, WORKERS_MAX);
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("lb-worker-{index}"))
                .spawn(move || {
                    WORKER_INDEX.with(|cell| cell.set(index));
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Workers {
            handles,
            _stops: stops,
        })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }
}
