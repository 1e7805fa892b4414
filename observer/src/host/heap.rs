//! The agent's heap and the C allocator under it. A whole-node view of 50,000 processes
//! builds tens of megabytes (the snapshot, the views, the JSON) and frees them a moment
//! later; glibc keeps what was freed (its mmap threshold rises to the largest block freed,
//! so the next big buffers come from the heap, and each thread's arena keeps its free
//! memory) unless told otherwise: the agent's RSS stayed at twice its table's size after
//! one such view. musl's allocator unmaps big blocks on free and needs neither call.

/// Big blocks (≥ 1 MiB) always get their own mapping, returned on free: the threshold
/// stays put instead of rising to the largest block ever freed.
pub(crate) fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Gives the free memory of every arena back to the kernel.
pub(crate) fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
