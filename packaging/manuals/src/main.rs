//! Writes the man pages and shell completions the packages install, from
//! the same clap definitions the binaries parse their arguments with, so a
//! page can never describe an option the program does not have.
//!
//! Output, below the directory given:
//! - `man1/purple-supervisor.1` and one `man1/purple-supervisor-SUB.1` per
//!   subcommand (`policy` has its own two below it);
//! - `man8/purple-netd.8`;
//! - `completions/purple-supervisor.{bash,zsh,fish}`.
//!
//! The policy format and the admin config pages (section 5) are written
//! from their docs/ pages by `packaging/build-packages.sh`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use clap_mangen::Man;

#[derive(Debug, Parser)]
#[command(name = "purple-manuals")]
struct Args {
    /// Directory to write into (created if missing).
    out: PathBuf,
    /// The date the pages carry (YYYY-MM-DD), for reproducible output.
    #[arg(long, default_value = "")]
    date: String,
}

const MANUAL: &str = "Purple Manual";

/// Pages every command page points to.
const SEE_ALSO_COMMANDS: &str =
    "purple-supervisor(1), purple-policy(5), purple.toml(5), purple-netd(8)";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let source = format!("Purple {}", env!("CARGO_PKG_VERSION"));

    let mut supervisor = purple_supervisor::cli::Cli::command().disable_help_subcommand(true);
    supervisor.build();
    let man1 = args.out.join("man1");
    fs::create_dir_all(&man1).with_context(|| format!("create {}", man1.display()))?;
    write_pages(&supervisor, &man1, "1", &args.date, &source, true)?;

    let mut netd = purple_netd::cli::Args::command();
    netd.build();
    let man8 = args.out.join("man8");
    fs::create_dir_all(&man8).with_context(|| format!("create {}", man8.display()))?;
    write_page(&netd, &man8, "8", &args.date, &source, NETD_EXTRA)?;

    let completions = args.out.join("completions");
    fs::create_dir_all(&completions)
        .with_context(|| format!("create {}", completions.display()))?;
    for (shell, suffix) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let path = completions.join(format!("purple-supervisor.{suffix}"));
        let mut file =
            fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut cmd = purple_supervisor::cli::Cli::command();
        clap_complete::generate(shell, &mut cmd, "purple-supervisor", &mut file);
        file.flush()
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The page of `cmd` and, below it, of each visible subcommand.
fn write_pages(
    cmd: &clap::Command,
    dir: &Path,
    section: &str,
    date: &str,
    source: &str,
    top: bool,
) -> anyhow::Result<()> {
    let extra = if top {
        SUPERVISOR_EXTRA
    } else {
        SUBCOMMAND_EXTRA
    };
    write_page(cmd, dir, section, date, source, extra)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, section, date, source, false)?;
    }
    Ok(())
}

fn write_page(
    cmd: &clap::Command,
    dir: &Path,
    section: &str,
    date: &str,
    source: &str,
    extra_roff: &str,
) -> anyhow::Result<()> {
    let man = Man::new(cmd.clone())
        .section(section)
        .date(date)
        .source(source)
        .manual(MANUAL);
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("render {}", path.display()))?;
    page.extend_from_slice(
        extra_roff
            .replace("@SEE_ALSO@", SEE_ALSO_COMMANDS)
            .as_bytes(),
    );
    fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Sections clap does not know: what the program touches and the exit
/// statuses, in roff.
const SUPERVISOR_EXTRA: &str = r#".SH "EXIT STATUS"
For \fBrun\fR: the command's own status; 128+N if it died of signal N; 124
when the policy's timeout ended it; 125 when Purple itself failed or refused
(one line on stderr says why); 126 when the command was found but is not
executable; 127 when it was not found.
.SH FILES
.TP
.I /usr/libexec/purple/purple-init
The setuid-root helper that builds each sandbox (started by
\fBpurple-supervisor\fR, never by hand).
.TP
.I /etc/purple/purple.toml
The admin config: what unprivileged callers may ask for; see
\fBpurple.toml\fR(5).
.TP
.I $XDG_RUNTIME_DIR/purple/supervisor.sock
The socket of \fBpurple-supervisor serve\fR (mode 0600).
.TP
.I /run/purple/netd.sock
The socket of \fBpurple-netd\fR(8), for policies with a filtered network.
.SH "SEE ALSO"
purple-policy(5), purple.toml(5), purple-netd(8), and the documentation in
/usr/share/doc/purple.
"#;

const SUBCOMMAND_EXTRA: &str = r#".SH "SEE ALSO"
@SEE_ALSO@
"#;

const NETD_EXTRA: &str = r#".SH FILES
.TP
.I /run/purple/netd.sock
The socket purple-init connects to (mode 0600, root peers only).
.TP
.I /run/purple/netd.lock
Held while purple-netd runs: one purple-netd per host.
.TP
.I /run/purple/netd-forwarding
Exists while "purple-netd turned net.ipv4.ip_forward on" holds.
.SH NOTES
The packaged unit \fIpurple-netd.service\fR starts it with CAP_NET_ADMIN
as its only capability. It owns \fBtable inet purple\fR and the \fBpv*\fR
interfaces, and nothing else.
.SH "SEE ALSO"
purple-supervisor(1), purple.toml(5), nft(8), ip(8)
"#;
