//! Reading the host, the bottom layer: /proc (the processes of the seed, reconciliation and
//! the one-shot view; the live facts only /proc has, read through kept-open stat files),
//! the cgroup file systems and resource files, the boot clock, and the C heap under the
//! agent. It knows nothing of the table or of containers: the layers above hand it pids,
//! start times and cgroup paths.

pub(crate) mod cgroupfs;
pub(crate) mod clock;
pub(crate) mod exe_file;
pub mod facts;
pub(crate) mod heap;
pub(crate) mod pid_range;
pub(crate) mod resource_files;
pub mod scan;
pub(crate) mod stat_files;
