//! Where the cgroup v2 hierarchy is mounted (hybrid hosts put it at
//! /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup).
use std::path::PathBuf;

/// Errors finding the cgroup v2 mount.
#[derive(Debug, thiserror::Error)]
pub enum CgroupRootError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[from] std::io::Error),
    #[error("no cgroup2 filesystem is mounted")]
    NotMounted,
}

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mountinfo.
pub fn cgroup_root() -> Result<PathBuf, CgroupRootError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    parse_mountinfo(&info).ok_or(CgroupRootError::NotMounted)
}

fn parse_mountinfo(info: &str) -> Option<PathBuf> {
    info.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options ... - fstype source super-options
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_unified_mount() {
        let info = "30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                    31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn none_without_cgroup2() {
        assert_eq!(parse_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
