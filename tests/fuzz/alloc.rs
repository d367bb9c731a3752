//! The allocation guard: the test binary's allocator, which notes any single
//! allocation over a limit made by a thread that is running a fuzz target.
//!
//! A decoder that sizes a buffer from a length it read, before checking that many
//! bytes exist, lets a few hostile bytes claim gigabytes (often silently: a zeroed
//! allocation is not touched until written). The guard catches that on any input,
//! not only when the machine runs out of memory. It wraps the system allocator for
//! the whole test binary; threads that run no fuzz target pay one thread-local read
//! per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One target run's limit and what broke it.
pub struct Guard {
    /// The largest single allocation allowed for the current input.
    limit: AtomicUsize,
    /// The largest allocation over the limit since the last [`Guard::take_excess`].
    excess: AtomicUsize,
}

impl Guard {
    /// A guard that lives for the rest of the process (threads hold it by reference).
    pub fn leak() -> &'static Guard {
        Box::leak(Box::new(Guard {
            limit: AtomicUsize::new(usize::MAX),
            excess: AtomicUsize::new(0),
        }))
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The largest allocation over the limit since the last call, if any.
    pub fn take_excess(&self) -> Option<usize> {
        match self.excess.swap(0, Ordering::Relaxed) {
            0 => None,
            size => Some(size),
        }
    }

    /// Makes the calling thread's allocations count against this guard.
    pub fn watch_this_thread(&'static self) {
        WATCHED.with(|watched| watched.set(Some(self)));
    }

    fn note(&self, size: usize) {
        if size > self.limit.load(Ordering::Relaxed) {
            self.excess.fetch_max(size, Ordering::Relaxed);
        }
    }
}

thread_local! {
    // Const-initialised and without a destructor: safe to read inside the allocator,
    // even while a thread is being torn down.
    static WATCHED: Cell<Option<&'static Guard>> = const { Cell::new(None) };
}

fn note(size: usize) {
    let _ = WATCHED.try_with(|watched| {
        if let Some(guard) = watched.get() {
            guard.note(size);
        }
    });
}

struct Watching;

// SAFETY: every call is passed on to the system allocator unchanged; the guard only
// reads a thread-local cell and updates atomics, and never allocates.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// The guard of the calling thread, for a target that runs work on threads of its
/// own (a runtime's workers and blocking pool): they watch the same guard.
pub fn current() -> Option<&'static Guard> {
    WATCHED.try_with(Cell::get).ok().flatten()
}
