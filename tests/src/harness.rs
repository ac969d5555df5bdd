//! Runs the real XDP program on crafted frames through BPF_PROG_TEST_RUN.
use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::{Map, MapData},
    programs::{TestRun, TestRunOptions},
};
use sip_xdp::{
    loader::{self, LoadOptions},
    maps::SipMaps,
};
use sip_xdp_common::Config;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// TC actions, as `BPF_PROG_TEST_RUN` reports them for the egress program.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// One loaded instance of the program with its own maps, unattached.
pub struct Datapath {
    ebpf: Ebpf,
    pub maps: SipMaps,
}

/// One BPF_PROG_TEST_RUN of `program` on `frame`, `repeat` times: (return value, mean ns per run
/// as the kernel timed it).
fn test_run<P>(program: &P, frame: &[u8], repeat: u32) -> Result<(u32, f64)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    ensure!(repeat > 0, "repeat must be at least 1");
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    let result = program.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok((result.return_value, result.duration.as_nanos() as f64))
}

/// Whether the process runs as root (the BPF tests need CAP_BPF + CAP_NET_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// BPF tests need root (CAP_BPF + CAP_NET_ADMIN); say so plainly instead of an EPERM deep inside.
/// Tests skip before this with [`crate::needs_root!`]; helpers keep it as a guard.
pub fn require_root() {
    assert!(
        is_root(),
        "sip-xdp's BPF tests load real programs: run them as root"
    );
}

impl Datapath {
    pub fn load(config: &Config) -> Result<Self> {
        Self::load_with(config, &LoadOptions::default())
    }

    pub fn load_with(config: &Config, options: &LoadOptions) -> Result<Self> {
        require_root();
        let mut ebpf = loader::load(options).context("loading the XDP program")?;
        let mut maps = SipMaps::take_from(&mut ebpf)?;
        maps.write_config(config)?;
        Ok(Self { ebpf, maps })
    }

    /// Runs the program once on `frame` and returns the XDP action.
    pub fn run(&mut self, frame: &[u8]) -> Result<u32> {
        Ok(self.run_repeat(frame, 1)?.0)
    }

    /// Runs the program `repeat` times on `frame`: (action, mean ns per run as the kernel timed it).
    pub fn run_repeat(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        test_run(loader::xdp_program(&mut self.ebpf)?, frame, repeat)
    }

    /// Runs the egress program once on `frame` (a frame the host sends) and returns the TC
    /// action.
    pub fn run_egress(&mut self, frame: &[u8]) -> Result<u32> {
        Ok(self.run_egress_repeat(frame, 1)?.0)
    }

    /// Runs the egress program `repeat` times on `frame`: (action, mean ns per run).
    pub fn run_egress_repeat(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        test_run(loader::egress_program(&mut self.ebpf)?, frame, repeat)
            .context("the egress program")
    }

    pub fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// A second handle on one of the program's maps, found through the program's map ids:
    /// raw access to maps `SipMaps` has taken, for what its typed methods do not offer.
    pub fn open_map(&mut self, name: &str) -> Result<Map> {
        // Maps only the egress program uses (ANSWERS) are found through its ids.
        let mut ids = loader::xdp_program(&mut self.ebpf)?
            .info()
            .context("program info")?
            .map_ids()
            .context("program map ids")?
            .context("the kernel does not report the program's map ids")?;
        if let Ok(egress) = loader::egress_program(&mut self.ebpf)
            && let Ok(info) = egress.info()
            && let Ok(Some(more)) = info.map_ids()
        {
            ids.extend(more);
        }
        // And those only the scan program uses (SIGNATURES).
        if let Ok(scan) = loader::scan_program(&mut self.ebpf)
            && let Ok(info) = scan.info()
            && let Ok(Some(more)) = info.map_ids()
        {
            ids.extend(more);
        }
        for id in ids {
            let data = MapData::from_id(id).with_context(|| format!("opening map id {id}"))?;
            let info = data
                .info()
                .with_context(|| format!("info of map id {id}"))?;
            if info.name_as_str() == Some(name) {
                return Map::from_map_data(data).with_context(|| format!("map {name}"));
            }
        }
        bail!("the loaded programs have no map named {name}; rebuild sip-xdp")
    }
}
