//! Interop with qemu-storage-daemon exporting vhost-user-blk: the frontend hands over only a
//! shared, fd-backed region (an unlinked tmpfs file), the test drives the split ring in that
//! memory, writes a sector and reads another, and checks the bytes in the backing file.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tdx_devices::vhost_user::{negotiate, RingAddresses, VhostUserBlk, VhostUserError};
use vhost::vhost_user::message::VhostUserProtocolFeatures as P;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

const QSD: &str = "/usr/bin/qemu-storage-daemon";
const MEM: usize = 1 << 20;
const Q: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;

struct Daemon(Child, PathBuf);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn wait_used(mem: &GuestMemoryMmap, want: u16) -> bool {
    for _ in 0..500 {
        if mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap() == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn request(mem: &GuestMemoryMmap, fe: &VhostUserBlk, n: u16, t: u32, sector: u64, data: u64) {
    let hdr = 0x1_0000u64;
    let st = 0x1_1000u64;
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(hdr)).unwrap();
    mem.write_obj(0xeeu8, GuestAddress(st)).unwrap();
    let dflags = if t == 0 { 1 | 2 } else { 1 };
    for (i, d) in [
        Descriptor::new(hdr, 16, 1, 1),
        Descriptor::new(data, 512, dflags, 2),
        Descriptor::new(st, 1, 2, 0),
    ]
    .iter()
    .enumerate()
    {
        mem.write_obj(*d, GuestAddress(DESC + 16 * i as u64))
            .unwrap();
    }
    mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(n % Q)))
        .unwrap();
    mem.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
    fe.kick().unwrap();
    assert!(
        wait_used(mem, n + 1),
        "backend did not complete request {n}"
    );
    assert_eq!(mem.read_obj::<u8>(GuestAddress(st)).unwrap(), 0, "status");
}

#[test]
fn qemu_storage_daemon_interop() {
    if !Path::new(QSD).exists() {
        println!("SKIPPED: {QSD} not found; vhost-user-blk interop not run");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tdx-devices-qsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("disk.img");
    let sock = dir.join("vhost.sock");
    let initial: Vec<u8> = (0..65536u32).map(|i| (i / 512) as u8).collect();
    std::fs::write(&img, &initial).unwrap();
    let child = Command::new(QSD)
        .arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=f,filename={}",
            img.display()
        ))
        .arg("--export")
        .arg(format!(
            "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={},writable=on",
            sock.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qemu-storage-daemon");
    let _daemon = Daemon(child, dir.clone());
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // Shared memory: fd-backed (a tmpfs file unlinked right away, like a memfd).
    let shm = std::env::temp_dir().join(format!("tdx-devices-shm-{}", std::process::id()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&shm)
        .unwrap();
    std::fs::remove_file(&shm).unwrap();
    f.set_len(MEM as u64).unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
        GuestAddress(0),
        MEM,
        Some(FileOffset::new(f, 0)),
    )])
    .unwrap();

    let fe = VhostUserBlk::connect(
        &sock,
        &mem,
        RingAddresses {
            size: Q,
            desc: DESC,
            avail: AVAIL,
            used: USED,
        },
    )
    .expect("vhost-user setup");
    assert_eq!(
        fe.features() & (1 << 33),
        0,
        "ACCESS_PLATFORM must not be negotiated"
    );
    assert_eq!(fe.features() & (1 << 32), 1 << 32);

    // Write sector 3 with 0xc3.
    mem.write_slice(&[0xc3; 512], GuestAddress(0x2_0000))
        .unwrap();
    request(&mem, &fe, 0, 1, 3, 0x2_0000);
    // Read sector 5.
    request(&mem, &fe, 1, 0, 5, 0x3_0000);
    let mut got = [0u8; 512];
    mem.read_slice(&mut got, GuestAddress(0x3_0000)).unwrap();
    assert_eq!(got, [5u8; 512]);
    // Flush, then check the file.
    let hdr = [4u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    mem.write_slice(&hdr, GuestAddress(0x1_0000)).unwrap();
    mem.write_obj(Descriptor::new(0x1_0000, 16, 1, 1), GuestAddress(DESC))
        .unwrap();
    mem.write_obj(Descriptor::new(0x1_1000, 1, 2, 0), GuestAddress(DESC + 16))
        .unwrap();
    mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 4)).unwrap();
    mem.write_obj(3u16, GuestAddress(AVAIL + 2)).unwrap();
    fe.kick().unwrap();
    assert!(wait_used(&mem, 3));
    let file = std::fs::read(&img).unwrap();
    let mut want = initial.clone();
    want[1536..2048].fill(0xc3);
    assert_eq!(file, want);
}

#[test]
fn feature_policy() {
    let all = P::all();
    // ACCESS_PLATFORM (IOTLB mode), EVENT_IDX, INDIRECT, PACKED are never taken; backend
    // protocol features that open a backend→frontend channel are stripped.
    let (f, p) = negotiate(u64::MAX, all).unwrap();
    assert_eq!(f & (1 << 33), 0);
    assert_eq!(f & (1 << 29), 0);
    assert_eq!(f & (1 << 28), 0);
    assert_eq!(f & (1 << 34), 0);
    assert_eq!(
        f,
        (1 << 32) | (1 << 30) | (1 << 1) | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 9) | (1 << 14)
    );
    assert_eq!(p, P::MQ | P::REPLY_ACK | P::CONFIG | P::CONFIGURE_MEM_SLOTS);
    assert!(!p.contains(P::BACKEND_REQ));
    assert!(!p.contains(P::PAGEFAULT));
    // Backends without VERSION_1 or PROTOCOL_FEATURES are refused.
    assert!(matches!(
        negotiate(1 << 30, all),
        Err(VhostUserError::MissingBackendFeature(m)) if m == 1 << 32
    ));
    assert!(matches!(
        negotiate((1 << 32) | (1 << 33), all),
        Err(VhostUserError::MissingBackendFeature(m)) if m == 1 << 30
    ));
}
