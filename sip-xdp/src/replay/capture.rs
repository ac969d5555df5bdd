//! Reading a capture: pcap or pcapng, Ethernet frames (or Linux cooked and raw IP captures,
//! given an Ethernet header), each with its timestamp.
use std::{fs::File, io::BufReader, path::Path};

use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};

use super::ReplayError;

/// One captured frame, as the NIC would hand it to XDP.
pub struct Frame {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Ethernet frame.
    pub data: Vec<u8>,
    /// The capture kept fewer bytes than the packet had (its snap length).
    pub snapped: bool,
}

/// A capture read whole.
pub struct Capture {
    /// `pcap` or `pcapng`.
    pub format: &'static str,
    /// The link types found (the first interface's for pcapng, plus any others).
    pub link_types: Vec<String>,
    pub frames: Vec<Frame>,
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads `path` whole. Errors name what was found: not a capture, a link type that is not
/// Ethernet (or convertible to it), a packet cut off by the end of the file.
pub fn read(path: &Path) -> Result<Capture, ReplayError> {
    let open = |path: &Path| {
        File::open(path).map_err(|source| ReplayError::Open {
            path: path.to_owned(),
            source,
        })
    };
    let mut magic = [0u8; 4];
    {
        use std::io::Read as _;
        let mut file = open(path)?;
        file.read_exact(&mut magic)
            .map_err(|_| ReplayError::NotACapture {
                path: path.to_owned(),
                found: "a file shorter than any capture header".to_owned(),
            })?;
    }
    let reader = BufReader::new(open(path)?);
    if PCAP_MAGICS.contains(&magic) {
        read_pcap(path, reader)
    } else if magic == PCAPNG_MAGIC {
        read_pcapng(path, reader)
    } else {
        Err(ReplayError::NotACapture {
            path: path.to_owned(),
            found: format!(
                "magic bytes {:02x} {:02x} {:02x} {:02x}",
                magic[0], magic[1], magic[2], magic[3]
            ),
        })
    }
}

fn truncated(path: &Path, index: usize, error: PcapError) -> ReplayError {
    ReplayError::Truncated {
        path: path.to_owned(),
        packet: index + 1,
        detail: error.to_string(),
    }
}

fn read_pcap(path: &Path, reader: BufReader<File>) -> Result<Capture, ReplayError> {
    let mut pcap = PcapReader::new(reader).map_err(|e| ReplayError::NotACapture {
        path: path.to_owned(),
        found: format!("a pcap header that does not parse ({e})"),
    })?;
    let link = pcap.header().datalink;
    check_link(path, link)?;
    let mut frames = Vec::new();
    while let Some(packet) = pcap.next_packet() {
        let packet = packet.map_err(|e| truncated(path, frames.len(), e))?;
        let snapped = (packet.data.len() as u32) < packet.orig_len;
        if let Some(data) = to_ethernet(link, &packet.data) {
            frames.push(Frame {
                ts_ns: packet.timestamp.as_nanos() as u64,
                data,
                snapped,
            });
        }
    }
    Ok(Capture {
        format: "pcap",
        link_types: vec![format!("{link:?}")],
        frames,
    })
}

fn read_pcapng(path: &Path, reader: BufReader<File>) -> Result<Capture, ReplayError> {
    let mut pcapng = PcapNgReader::new(reader).map_err(|e| ReplayError::NotACapture {
        path: path.to_owned(),
        found: format!("a pcapng section header that does not parse ({e})"),
    })?;
    let mut frames = Vec::new();
    let mut link_types: Vec<String> = Vec::new();
    // Each interface's link type, in the order their blocks come (a packet names its
    // interface by that index).
    let mut interfaces: Vec<DataLink> = Vec::new();
    let mut index = 0;
    while let Some(block) = pcapng.next_block() {
        let block = block.map_err(|e| truncated(path, index, e))?;
        match block {
            Block::InterfaceDescription(interface) => {
                check_link(path, interface.linktype)?;
                interfaces.push(interface.linktype);
                let name = format!("{:?}", interface.linktype);
                if !link_types.contains(&name) {
                    link_types.push(name);
                }
            }
            Block::EnhancedPacket(packet) => {
                index += 1;
                let link = interfaces
                    .get(packet.interface_id as usize)
                    .copied()
                    .ok_or_else(|| ReplayError::NotACapture {
                        path: path.to_owned(),
                        found: format!(
                            "packet {index} on interface {} that no interface block describes",
                            packet.interface_id
                        ),
                    })?;
                let snapped = (packet.data.len() as u32) < packet.original_len;
                if let Some(data) = to_ethernet(link, &packet.data) {
                    frames.push(Frame {
                        ts_ns: packet.timestamp.as_nanos() as u64,
                        data,
                        snapped,
                    });
                }
            }
            Block::SectionHeader(_) => interfaces.clear(),
            Block::SimplePacket(_) => {
                // No timestamp: the replay could not place it in time.
                index += 1;
            }
            _ => {}
        }
    }
    Ok(Capture {
        format: "pcapng",
        link_types,
        frames,
    })
}

/// The link types a replay can turn into Ethernet frames.
fn check_link(path: &Path, link: DataLink) -> Result<(), ReplayError> {
    match link {
        DataLink::ETHERNET
        | DataLink::LINUX_SLL
        | DataLink::LINUX_SLL2
        | DataLink::RAW
        | DataLink::IPV4
        | DataLink::IPV6 => Ok(()),
        other => Err(ReplayError::LinkType {
            path: path.to_owned(),
            found: format!("{other:?}"),
        }),
    }
}

/// The frame as XDP would see it: Ethernet as captured, or an Ethernet header put in front of
/// a Linux cooked (`tcpdump -i any`) or raw IP capture. `None` for what carries no IP packet.
fn to_ethernet(link: DataLink, data: &[u8]) -> Option<Vec<u8>> {
    let (ethertype, ip) = match link {
        DataLink::ETHERNET => return Some(data.to_vec()),
        // SLL: packet type, ARPHRD, address length, 8 address bytes, protocol (16 bytes).
        DataLink::LINUX_SLL => (
            u16::from_be_bytes([*data.get(14)?, *data.get(15)?]),
            data.get(16..)?,
        ),
        // SLL2: protocol first, 20 bytes in all.
        DataLink::LINUX_SLL2 => (
            u16::from_be_bytes([*data.first()?, *data.get(1)?]),
            data.get(20..)?,
        ),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            let ethertype = match data.first()? >> 4 {
                4 => 0x0800,
                6 => 0x86dd,
                _ => return None,
            };
            (ethertype, data)
        }
        _ => return None,
    };
    let mut frame = Vec::with_capacity(14 + ip.len());
    // Locally administered addresses: the program reads neither.
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(ip);
    Some(frame)
}
