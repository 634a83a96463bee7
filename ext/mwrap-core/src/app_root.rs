//! `MWRAP=app_root:DIR`: which Ruby files are the application's own. An
//! allocation is charged to the innermost Ruby frame whose file is under
//! DIR, so that memory a library allocates lands on the app line that
//! called it.
//!
//! Paths are compared lexically, component by component: DIR as given
//! (made absolute against the working directory when it is set) and DIR
//! with its symlinks resolved both count; a relative file name (the main
//! script as typed on the command line) is taken relative to the working
//! directory at start-up, as Ruby took it, whatever the program's working
//! directory is now. File names are not resolved through symlinks (that
//! would cost a system call per file).

/// The application's directory, in the forms a file under it can take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRoot {
    /// Normalised absolute forms of DIR (as given, and resolved), without
    /// a trailing `/`; one or two.
    dirs: Vec<Vec<u8>>,
    /// The working directory at start-up, normalised: what relative
    /// file names are relative to.
    start_dir: Vec<u8>,
}

impl AppRoot {
    /// `dir` as given (relative to `cwd`, the working directory now),
    /// `resolved` (its `realpath`, if known) and `start_dir`, the working
    /// directory at start-up; both directories absolute.
    pub fn new(dir: &[u8], resolved: Option<&[u8]>, cwd: &[u8], start_dir: &[u8]) -> AppRoot {
        let cwd = normalize(cwd, b"/").unwrap_or_else(|| b"/".to_vec());
        let start_dir = normalize(start_dir, b"/").unwrap_or_else(|| cwd.clone());
        let mut dirs = vec![normalize(dir, &cwd).unwrap_or_default()];
        if let Some(r) = resolved.and_then(|r| normalize(r, &cwd)) {
            if !dirs.contains(&r) {
                dirs.push(r);
            }
        }
        AppRoot { dirs, start_dir }
    }

    /// The directory as given, made absolute and normalised.
    pub fn dir(&self) -> &[u8] {
        &self.dirs[0]
    }

    /// Whether the Ruby file `path` (as Ruby reports it) is under the root.
    /// Names that are not paths (`-e`, `(eval)`, `<internal:…>`) are not;
    /// nor is anything when no memory can be had to compare.
    pub fn contains(&self, path: &[u8]) -> bool {
        if path.is_empty() || path.starts_with(b"(") || path.starts_with(b"<") || path == b"-e" {
            return false;
        }
        let Some(file) = normalize(path, &self.start_dir) else {
            return false;
        };
        self.dirs.iter().any(|dir| {
            file.starts_with(dir)
                && (dir.len() == 1 || file.len() == dir.len() || file[dir.len()] == b'/')
        })
    }
}

/// `path` made absolute against `base` (absolute, normalised), with `.`,
/// `..` and repeated `/` removed; `/` for the root. No trailing `/`. None
/// when no memory can be had (it runs inside the malloc hook, once per
/// file: never an abort).
fn normalize(path: &[u8], base: &[u8]) -> Option<Vec<u8>> {
    let relative = path.first() != Some(&b'/');
    let mut out: Vec<u8> = Vec::new();
    out.try_reserve(path.len() + if relative { base.len() + 1 } else { 0 } + 1)
        .ok()?;
    let pieces = [if relative { base } else { b"" }, path];
    for part in pieces.iter().flat_map(|p| p.split(|&b| b == b'/')) {
        match part {
            b"" | b"." => {}
            b".." => {
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            p => {
                out.push(b'/');
                out.extend_from_slice(p);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_under_the_root_by_whole_components() {
        let r = AppRoot::new(b"/srv/app/", None, b"/home/u", b"/home/u");
        assert_eq!(r.dir(), b"/srv/app");
        assert!(r.contains(b"/srv/app/models/user.rb"));
        assert!(r.contains(b"/srv/app/./lib/../config.rb"));
        assert!(
            !r.contains(b"/srv/application/x.rb"),
            "a prefix is not a component"
        );
        assert!(!r.contains(b"/srv/app/../gems/x.rb"));
        assert!(!r.contains(b"/usr/lib/ruby/3.1.0/json.rb"));
        for odd in [&b"-e"[..], b"(eval)", b"<internal:kernel>", b""] {
            assert!(!r.contains(odd), "{odd:?}");
        }
    }

    #[test]
    fn relative_names_and_roots_and_resolved_symlinks() {
        let r = AppRoot::new(b"app", Some(b"/data/real/app"), b"/home/u", b"/home/u");
        assert_eq!(r.dir(), b"/home/u/app");
        assert!(
            r.contains(b"app/main.rb"),
            "relative to the start-up directory"
        );
        assert!(r.contains(b"./app/main.rb"));
        assert!(r.contains(b"/home/u/app/x.rb"));
        assert!(
            r.contains(b"/data/real/app/x.rb"),
            "through the resolved path"
        );
        assert!(!r.contains(b"main.rb"));
        let root = AppRoot::new(b"/", None, b"/", b"/");
        assert!(root.contains(b"/anything.rb"));
        assert!(root.contains(b"relative.rb"));
    }

    #[test]
    fn relative_names_against_the_start_up_directory_after_a_chdir() {
        // Set at run time in /tmp, for a program started in /home/u.
        let r = AppRoot::new(b"../home/u", None, b"/tmp", b"/home/u");
        assert_eq!(r.dir(), b"/home/u");
        assert!(r.contains(b"main.rb"), "Ruby's name for /home/u/main.rb");
        assert!(!AppRoot::new(b".", None, b"/tmp", b"/home/u").contains(b"main.rb"));
    }
}
