//! Repository hygiene that a review would otherwise have to remember.
//!
//! A user's clone has nothing beside it, so no tracked file may point outside the repository
//! for a fact, a table or a note: what the project relies on lives in it.

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    /// The sibling folder the project's developers read, spelt so this file does not match itself.
    const SIBLING: &str = concat!("..", "/shared");

    fn tracked_files(root: &Path) -> Vec<String> {
        let out = Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(root)
            .output()
            .expect("git ls-files");
        assert!(out.status.success(), "git ls-files failed");
        String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn no_tracked_file_cites_the_sibling_folder() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = tracked_files(&root);
        assert!(files.len() > 50, "only {} tracked files found", files.len());
        let offenders: Vec<String> = files
            .iter()
            .filter_map(|f| {
                let text = std::fs::read(root.join(f)).ok()?;
                let text = String::from_utf8_lossy(&text);
                let lines: Vec<usize> = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| l.contains(SIBLING))
                    .map(|(i, _)| i + 1)
                    .collect();
                (!lines.is_empty()).then(|| format!("{f}:{lines:?}"))
            })
            .collect();
        assert!(
            offenders.is_empty(),
            "files cite {SIBLING}, which a clone does not have; bring the fact or table into \
             the repo instead: {offenders:#?}"
        );
    }
}
