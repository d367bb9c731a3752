//! Allocator tuning for the binaries.
//!
//! glibc's malloc raises its mmap threshold each time a large block is freed, after
//! which multi-MiB buffers (packs, chunker windows) are carved from the heap and
//! fragment it: a backup's resident memory then grows well past what it holds live.
//! Fixing the threshold at 4 MiB keeps those buffers in their own mappings, returned
//! to the system when freed, while chunk-sized buffers keep the heap's speed.
//! Measured on a 1.8 GB backup: peak RSS 215 MiB → 97 MiB for a few percent of time.

/// Call once at start-up.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters and takes the allocator lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Returns freed heap memory to the system. After a large reply (a listing of
/// thousands of backups) the allocator would otherwise keep the pages of all the
/// temporary records, and an idle daemon would stay at its high-water mark.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free pages back; it takes the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
