//! Shared between Purple's helpers: the policy model and its parser, the
//! wire protocol between `purple-supervisor` and `purple-init`, the exit
//! report, and the small value types both sides validate the same way.

pub mod audit;
pub mod capability;
pub mod cgroup_files;
pub mod codec;
pub mod netd;
pub mod policy;
pub mod protocol;
pub mod report;
pub mod syscalls;
pub mod values;
