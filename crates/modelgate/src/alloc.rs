//! The allocator: mimalloc (measured faster than glibc malloc on the proxy path).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the calling thread's freed memory to the OS. Called after a config reload, whose parsing allocates and
/// frees tens of MB for large configs: mimalloc would otherwise keep those pages resident until that thread
/// allocates again (measured with 10,000 routes: RSS 157 MB before, see bench/RESULTS.md for after).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: `mi_collect` only walks mimalloc's own heap structures of the calling thread; it takes no pointers
    // from us and is safe to call at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
