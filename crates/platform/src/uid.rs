//! Who the runner is: the one place that asks the kernel (the lab's isolation, the
//! private servers and the private sockets all depend on it).

/// The effective uid.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Running as root: namespaces need no user namespace, and PostgreSQL must drop to
/// another user.
pub fn is_root() -> bool {
    own_uid() == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn agrees_with_the_proc_status_of_this_process() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        // Uid: real effective saved filesystem
        let euid: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(super::own_uid(), euid);
        assert_eq!(super::is_root(), euid == 0);
    }
}
