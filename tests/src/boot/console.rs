//! Reads what the test stage 1 printed on the serial console.

use super::stage1::markers;

/// The machine-readable parts of a boot log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Text after `NETBOOT-VERDICT: ` (`ok` or `fail <reasons>`).
    pub verdict: Option<String>,
    /// Exit status of the seed's postMountCommands.
    pub postmount_status: Option<i32>,
    /// Store listing lines (see `listing`), as printed.
    pub listing: Option<Vec<String>>,
    /// Registered store paths, sorted.
    pub registration: Option<Vec<String>>,
    /// Every `Initramfs unpacking failed` line.
    pub unpack_failures: Vec<String>,
    /// Kernel uptime (s) at the verdict.
    pub uptime: Option<f64>,
    /// Every kernel panic line.
    pub panics: Vec<String>,
}

/// Parses a console log (`\r` already removed).
pub fn parse(console: &str) -> Report {
    let mut r = Report::default();
    let mut section: Option<(bool, Vec<String>)> = None; // (is_listing, lines)
    for line in console.lines() {
        if let Some((is_listing, lines)) = section.as_mut() {
            let end = if *is_listing {
                markers::LISTING_END
            } else {
                markers::REGISTRATION_END
            };
            if line.trim_end() == end {
                let done = std::mem::take(lines);
                if *is_listing {
                    r.listing = Some(done);
                } else {
                    r.registration = Some(done);
                }
                section = None;
            } else {
                lines.push(line.to_owned());
            }
            continue;
        }
        let t = line.trim_end();
        if t.ends_with(markers::LISTING_BEGIN) {
            section = Some((true, Vec::new()));
        } else if t.ends_with(markers::REGISTRATION_BEGIN) {
            section = Some((false, Vec::new()));
        } else if let Some(v) = after(t, markers::VERDICT) {
            r.verdict = Some(v.to_owned());
        } else if let Some(v) = after(t, markers::STATUS) {
            r.postmount_status = v.split_whitespace().next().and_then(|s| s.parse().ok());
        } else if let Some(v) = after(t, markers::UPTIME) {
            r.uptime = v.trim().parse().ok();
        }
        if t.contains("Initramfs unpacking failed") {
            r.unpack_failures.push(t.to_owned());
        }
        if t.contains("Kernel panic") {
            r.panics.push(t.to_owned());
        }
    }
    r
}

/// Checks that `needles` occur in `console` in this order (each after the
/// previous one); on failure, says which one is missing.
pub fn in_order(console: &str, needles: &[&str]) -> Result<(), String> {
    let mut from = 0;
    for n in needles {
        match console.get(from..).and_then(|rest| rest.find(n)) {
            Some(i) => from += i + n.len(),
            None => {
                let anywhere = console.contains(n);
                return Err(format!(
                    "{n:?} {} after the lines before it",
                    if anywhere {
                        "appears, but not"
                    } else {
                        "does not appear"
                    }
                ));
            }
        }
    }
    Ok(())
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_verdict() {
        let log = "iPXE junk\nNETBOOT-STAGE1: postMountCommands exit status 0 at 3.1s\n\
                   NETBOOT-LISTING-BEGIN\naa d 0555 0 0 - 1 - - -\nNETBOOT-LISTING-END\n\
                   NETBOOT-REGISTRATION-BEGIN\n/nix/store/aa\nNETBOOT-REGISTRATION-END\n\
                   [    1.0] Initramfs unpacking failed: junk\nNETBOOT-VERDICT: ok\nNETBOOT-UPTIME: 4.50\n";
        let r = parse(log);
        assert_eq!(r.verdict.as_deref(), Some("ok"));
        assert_eq!(r.postmount_status, Some(0));
        assert_eq!(r.listing, Some(vec!["aa d 0555 0 0 - 1 - - -".to_owned()]));
        assert_eq!(r.registration, Some(vec!["/nix/store/aa".to_owned()]));
        assert_eq!(r.unpack_failures.len(), 1);
        assert_eq!(r.uptime, Some(4.5));
    }

    #[test]
    fn order_of_lines() {
        let log = "a\nReached target x\nSwitching root.\nb\n";
        assert!(in_order(log, &["Reached target x", "Switching root", "b"]).is_ok());
        assert!(in_order(log, &["Switching root", "Reached target x"])
            .unwrap_err()
            .contains("appears, but not"));
        assert!(in_order(log, &["nope"])
            .unwrap_err()
            .contains("does not appear"));
    }
}
