//! `sip-xdp config check|show`.
use anyhow::Result;

use super::{ConfigAction, load_settings};
use crate::config::Settings;

pub(super) fn config(action: &ConfigAction) -> Result<()> {
    match action {
        ConfigAction::Check { file } => {
            let settings = Settings::load(file)?;
            for warning in settings.warnings() {
                eprintln!("sip-xdp: warning: {}: {warning}", file.display());
            }
            println!("{}: OK", file.display());
        }
        ConfigAction::Show { config } => {
            let (settings, origin) = load_settings(config.as_deref())?;
            match origin {
                Some(path) => println!(
                    "# effective config: {} merged with defaults",
                    path.display()
                ),
                None => println!("# effective config: built-in defaults (no config file)"),
            }
            print!("{}", settings.to_toml());
        }
    }
    Ok(())
}
