//! Where copies run. Each worker has a companion thread with a runtime of its
//! own, at a lower CPU priority, and the copies of the requests the worker
//! serves run there: connecting to the mirror, sending, reading and dropping
//! whatever it answers. When users' work and copies' work contend for a core,
//! the kernel's scheduler runs the users' first, so a mirror that makes its
//! copies expensive (a new connection each, endless bytes to drain) costs the
//! copies time, not the users. One wake-up of the companion per copy is the
//! price; a copy's latency is nobody's.

use std::cell::RefCell;
use std::future::Future;

use tokio::runtime::Handle;

/// How much nicer than the process's own the companion threads run (capped
/// at 19, the lowest priority).
pub const COPY_NICE: i32 = 10;

thread_local! {
    static COPIES: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Copies spawned from this thread from now on run on `handle`'s runtime.
pub fn run_copies_on(handle: Handle) {
    COPIES.with(|copies| *copies.borrow_mut() = Some(handle));
}

/// Starts a copy: on this thread's companion runtime when it has one, else
/// on the current runtime (tests, and any thread without a companion).
pub fn spawn_copy<F>(copy: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    COPIES.with(|copies| match copies.borrow().as_ref() {
        Some(handle) => drop(handle.spawn(copy)),
        None => drop(tokio::spawn(copy)),
    });
}

/// Lowers the calling thread's CPU priority to `COPY_NICE`. Best effort: a
/// refusal leaves it at the process's own. The crate's one `unsafe`: two
/// system calls with integer arguments (std has no safe setpriority).
#[allow(unsafe_code)]
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; no memory is
    // passed or shared.
    unsafe {
        let nice = (this_thread_nice().unwrap_or(0) + COPY_NICE).min(19);
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}

/// The calling thread's nice value (field 19 of /proc/thread-self/stat).
pub fn this_thread_nice() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    after_name.split(' ').nth(16)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_run_on_the_companion_runtime_when_there_is_one() {
        let companion = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let local = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let here = std::thread::current().id();
        local.block_on(async {
            run_copies_on(companion.handle().clone());
            spawn_copy(async move {
                tx.send(std::thread::current().id()).unwrap();
            });
        });
        // The companion's runtime runs the copy on the thread that drives it.
        let ran_on = std::thread::spawn(move || {
            companion.block_on(async { tokio::task::yield_now().await });
            (rx.recv().unwrap(), std::thread::current().id())
        })
        .join()
        .unwrap();
        assert_eq!(ran_on.0, ran_on.1);
        assert_ne!(ran_on.0, here);
        COPIES.with(|copies| *copies.borrow_mut() = None);
    }

    #[test]
    fn lowering_the_priority_sets_the_nice_value() {
        std::thread::spawn(|| {
            let before = this_thread_nice().unwrap();
            lower_this_thread();
            assert_eq!(this_thread_nice(), Some((before + COPY_NICE).min(19)));
        })
        .join()
        .unwrap();
    }
}
