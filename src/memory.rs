//! glibc's allocator, tuned for what the operator's heap is: a few hundred thousand
//! small long-lived objects (the caches) and a stream of short-lived ones (each watch
//! event decoded, then summarised or dropped). By default glibc gives every thread
//! that allocates its own arena, up to eight per core, and each keeps the memory freed
//! in it; two arenas serve two worker threads without contention worth measuring, and
//! after the first lists, memory freed by decoding goes back to the system.
//! Elsewhere (musl, other systems) these are no-ops.

/// Caps glibc's arenas. Call first thing in `main`, before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no thread has started yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the system (after the initial lists, whose decoding
/// leaves most of the peak free).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases pages the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes the allocator has handed out and not had back, and bytes it holds from the
/// system, for the log; `None` where glibc does not report them.
pub fn heap() -> Option<(usize, usize)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd, info.arena + info.hblkhd))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}
