//! The pcap port against real files: round trips through both formats,
//! tshark decoding what the port writes, damaged and foreign inputs, and
//! back-pressure from a small pool.

// One module so that `cargo test -p dataplane pcap` selects every test here.
mod pcap {
    use dataplane::packet::{Meta, Packet, Pool};
    use dataplane::port::pcap::{PcapPort, PcapPortError};
    use dataplane::port::{Burst, Port};
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::{DataLink, Endianness};
    use std::borrow::Cow;
    use std::fs::File;
    use std::io::Write;
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const T0: u64 = 1_700_000_000_123_456_789;

    /// An Ethernet/IPv4/UDP frame of `len` bytes (at least 42) from MAC
    /// 02:00:00:00:00:<src> to UDP port 2000 + `src`.
    fn frame(src: u8, len: usize) -> Vec<u8> {
        assert!(len >= 42);
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, src]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, src]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 200]);
        let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let udp = &mut f[34..42];
        udp[0..2].copy_from_slice(&1000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&(2000 + u16::from(src)).to_be_bytes());
        udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        for (i, b) in f[42..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    /// Runs tshark on `path` and returns one row of `fields` per frame. Fails the
    /// test when tshark is missing: these tests exist to prove tshark reads the files.
    fn tshark(path: &Path, fields: &[&str]) -> Vec<Vec<String>> {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(path).args(["-T", "fields", "-E", "separator=|"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!(
            "tshark is required by these tests and could not be run ({e}); install it (Debian: apt-get install tshark)"
        )
        });
        assert!(out.status.success(), "tshark failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
    }

    /// Receives everything from `port`, copying each packet out and giving its buffer back.
    fn drain(port: &mut PcapPort) -> Vec<(Vec<u8>, Meta)> {
        let mut got = Vec::new();
        let mut burst = Burst::new();
        for _ in 0..10_000 {
            if port.rx_exhausted() {
                break;
            }
            port.rx_burst(&mut burst);
            got.extend(burst.drain(..).map(|p| (p.data().to_vec(), p.meta)));
        }
        assert!(port.rx_exhausted(), "input never ended");
        got
    }

    /// The three frames the round trips send: a minimum frame, a 100-byte slice
    /// of a 1514-byte frame, and a full-size frame.
    fn test_packets() -> Vec<Packet> {
        vec![
            Packet::from_slice(&frame(1, 60), Meta { port: 0, ts_ns: T0, orig_len: 0 }),
            Packet::from_slice(&frame(2, 1514)[..100], Meta { port: 0, ts_ns: T0 + 1, orig_len: 1514 }),
            Packet::from_slice(&frame(3, 1514), Meta { port: 0, ts_ns: T0 + 2_000_000_000, orig_len: 0 }),
        ]
    }

    fn round_trip(file_name: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name);
        let pool = Pool::new(64, 2048);
        let sent = test_packets();
        let expected: Vec<_> = sent.iter().map(|p| (p.data().to_vec(), p.meta)).collect();

        let mut out = PcapPort::open("vm-web-1", 1, None, Some(&path), Arc::clone(&pool)).unwrap();
        let mut burst: Burst = sent.into_iter().collect();
        assert_eq!(out.tx_burst(&mut burst), 3);
        assert!(burst.is_empty());
        let s = out.stats();
        assert_eq!((s.tx_packets, s.tx_bytes, s.tx_dropped), (3, 60 + 100 + 1514, 0));
        drop(out); // flushes

        let mut inp = PcapPort::open("replay", 5, Some(&path), None, Arc::clone(&pool)).unwrap();
        let got = drain(&mut inp);
        assert_eq!(got.len(), 3);
        for ((data, meta), (want_data, want_meta)) in got.iter().zip(&expected) {
            assert_eq!(data, want_data);
            assert_eq!(meta.ts_ns, want_meta.ts_ns, "timestamps keep nanoseconds");
            assert_eq!(meta.orig_len, want_meta.orig_len);
            assert_eq!(meta.port, 5);
        }
        let s = inp.stats();
        assert_eq!((s.rx_packets, s.rx_bytes, s.rx_dropped), (3, 60 + 100 + 1514, 0));
        assert_eq!(inp.rx_corrupt(), 0);
        assert_eq!(pool.available(), pool.capacity(), "no buffer leaked");

        let rows = tshark(
            &path,
            &[
                "frame.time_epoch",
                "frame.len",
                "frame.cap_len",
                "eth.src",
                "ip.src",
                "udp.dstport",
                "frame.interface_name",
            ],
        );
        let name = if file_name.ends_with(".pcapng") { "vm-web-1" } else { "" };
        assert_eq!(
            rows,
            [
                ["1700000000.123456789", "60", "60", "02:00:00:00:00:01", "10.0.0.1", "2001", name],
                ["1700000000.123456790", "1514", "100", "02:00:00:00:00:02", "10.0.0.2", "2002", name],
                ["1700000002.123456789", "1514", "1514", "02:00:00:00:00:03", "10.0.0.3", "2003", name],
            ]
        );
    }

    #[test]
    fn pcap_round_trip_and_tshark_decodes() {
        round_trip("out.pcap");
    }

    #[test]
    fn pcapng_round_trip_and_tshark_decodes() {
        round_trip("out.pcapng");
    }

    #[test]
    fn unstamped_packets_get_the_transmit_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now.pcapng");
        let pool = Pool::new(4, 2048);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let mut out = PcapPort::open("p", 0, None, Some(&path), Arc::clone(&pool)).unwrap();
        let mut burst = Burst::new();
        burst.push(Packet::from_slice(&frame(1, 60), Meta::default()));
        out.tx_burst(&mut burst);
        out.flush().unwrap();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let got = drain(&mut PcapPort::open("p", 0, Some(&path), None, pool).unwrap());
        assert!((before..=after).contains(&got[0].1.ts_ns), "{before} <= {} <= {after}", got[0].1.ts_ns);
    }

    fn write_frames(path: &Path, count: usize) {
        let mut out = PcapPort::open("w", 0, None, Some(path), Pool::new(1, 64)).unwrap();
        for chunk in (0..count).collect::<Vec<_>>().chunks(dataplane::BURST) {
            let mut burst: Burst = chunk
                .iter()
                .map(|&i| {
                    Packet::from_slice(
                        &frame(i as u8, 60 + i % 40),
                        Meta { port: 0, ts_ns: T0 + i as u64, orig_len: 0 },
                    )
                })
                .collect();
            out.tx_burst(&mut burst);
        }
    }

    #[test]
    fn truncated_pcap_tail_ends_input_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        write_frames(&path, 3);
        let len = std::fs::metadata(&path).unwrap().len();
        File::options().write(true).open(&path).unwrap().set_len(len - 10).unwrap();

        let pool = Pool::new(8, 2048);
        let mut port = PcapPort::open("cut", 0, Some(&path), None, Arc::clone(&pool)).unwrap();
        let got = drain(&mut port);
        assert_eq!(got.len(), 2);
        assert_eq!(port.rx_corrupt(), 1);
        assert_eq!(port.stats().rx_dropped, 1);
        assert_eq!(pool.available(), pool.capacity());
    }

    #[test]
    fn garbage_after_pcapng_packets_ends_input_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.pcapng");
        write_frames(&path, 3);
        // A block header claiming an impossible length, then noise.
        File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[6, 0, 0, 0, 7, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();

        let mut port = PcapPort::open("g", 0, Some(&path), None, Pool::new(8, 2048)).unwrap();
        assert_eq!(drain(&mut port).len(), 3);
        assert_eq!(port.rx_corrupt(), 1);
    }

    #[test]
    fn bad_inputs_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(1, 64);
        let open = |p: &Path| PcapPort::open("x", 0, Some(p), None, Arc::clone(&pool)).err().expect("must be refused");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "this is not a capture\n").unwrap();
        let err = open(&text);
        assert!(matches!(err, PcapPortError::NotCapture { .. }), "{err:?}");
        assert!(err.to_string().contains(&*text.to_string_lossy()), "{err}");

        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(open(&empty), PcapPortError::NotCapture { .. }));

        let short = dir.path().join("short.pcap");
        std::fs::write(&short, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).unwrap();
        let err = open(&short);
        assert!(matches!(err, PcapPortError::BadHeader { .. }), "{err:?}");
        assert!(err.to_string().contains("short.pcap"), "{err}");

        let missing = dir.path().join("missing.pcap");
        let err = open(&missing);
        assert!(matches!(err, PcapPortError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.pcap"), "{err}");

        let err =
            PcapPort::open("x", 0, None, Some(&dir.path().join("no/such/dir.pcap")), Arc::clone(&pool)).err().unwrap();
        assert!(matches!(err, PcapPortError::Create { .. }), "{err:?}");
        assert!(err.to_string().contains("dir.pcap"), "{err}");
    }

    #[test]
    fn non_ethernet_captures_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(1, 64);

        let raw_ip = dir.path().join("raw.pcap");
        let header = PcapHeader { datalink: DataLink::RAW, ..Default::default() };
        PcapWriter::with_header(File::create(&raw_ip).unwrap(), header).unwrap();
        let err = PcapPort::open("x", 0, Some(&raw_ip), None, Arc::clone(&pool)).err().unwrap();
        assert!(matches!(err, PcapPortError::LinkType { linktype: 101, .. }), "{err:?}");
        assert!(err.to_string().contains("raw.pcap"), "{err}");

        let mixed = dir.path().join("mixed.pcapng");
        let mut w = PcapNgWriter::new(File::create(&mixed).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0)).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::IEEE802_11, 0)).unwrap();
        drop(w);
        let err = PcapPort::open("x", 0, Some(&mixed), None, pool).err().unwrap();
        assert!(matches!(err, PcapPortError::LinkType { linktype: 105, .. }), "{err:?}");
    }

    #[test]
    fn small_pool_delays_packets_but_never_loses_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.pcapng");
        write_frames(&path, 100);

        let pool = Pool::new(4, 2048);
        let mut port = PcapPort::open("p", 0, Some(&path), None, Arc::clone(&pool)).unwrap();
        let mut held = Burst::new();
        assert_eq!(port.rx_burst(&mut held), 4, "a burst stops when the pool runs dry");
        let mut more = Burst::new();
        assert_eq!(port.rx_burst(&mut more), 0, "nothing is read without a buffer");
        let mut got: Vec<Vec<u8>> = held.drain(..).map(|p| p.data().to_vec()).collect();
        got.extend(drain(&mut port).into_iter().map(|(d, _)| d));
        assert_eq!(got.len(), 100);
        for (i, data) in got.iter().enumerate() {
            assert_eq!(data, &frame(i as u8, 60 + i % 40), "packet {i}");
        }
        assert_eq!(port.stats().rx_dropped, 0);
        assert!(pool.empty_count() > 0);
    }

    #[test]
    fn frames_larger_than_a_buffer_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pcap");
        let mut out = PcapPort::open("w", 0, None, Some(&path), Pool::new(1, 64)).unwrap();
        let mut burst: Burst = [100, 300, 120]
            .iter()
            .map(|&len| Packet::from_slice(&frame(1, len), Meta { port: 0, ts_ns: T0, orig_len: 0 }))
            .collect();
        out.tx_burst(&mut burst);
        drop(out);

        let mut port = PcapPort::open("r", 0, Some(&path), None, Pool::new(8, 256)).unwrap();
        let lens: Vec<usize> = drain(&mut port).iter().map(|(d, _)| d.len()).collect();
        assert_eq!(lens, [100, 120]);
        assert_eq!(port.stats().rx_dropped, 1);
    }

    #[test]
    fn pcapng_with_several_interfaces_and_resolutions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("multi.pcapng");
        let mut w = PcapNgWriter::with_endianness(File::create(&path).unwrap(), Endianness::Big).unwrap();
        // Interface 0: default resolution (microseconds); interface 1: nanoseconds.
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0)).unwrap();
        let mut ns = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
        ns.options = vec![InterfaceDescriptionOption::IfName("eth1".into()), InterfaceDescriptionOption::IfTsResol(9)];
        w.write_pcapng_block(ns).unwrap();
        let f = frame(9, 64);
        for (iface, units) in [(0u32, 1_700_000_000_000_001u64), (1, T0), (0, 1_700_000_000_000_002)] {
            // pcap-file writes `timestamp.as_nanos()` as the raw units.
            let epb = EnhancedPacketBlock {
                interface_id: iface,
                timestamp: Duration::from_nanos(units),
                original_len: 64,
                data: Cow::Borrowed(&f),
                options: vec![],
            };
            w.write_pcapng_block(epb).unwrap();
        }
        drop(w);

        let mut port = PcapPort::open("r", 2, Some(&path), None, Pool::new(8, 2048)).unwrap();
        let ts: Vec<u64> = drain(&mut port).iter().map(|(_, m)| m.ts_ns).collect();
        assert_eq!(ts, [1_700_000_000_000_001_000, T0, 1_700_000_000_000_002_000]);
    }

    #[test]
    fn big_endian_microsecond_pcap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("be.pcap");
        let header = PcapHeader { endianness: Endianness::Big, snaplen: 96, ..Default::default() };
        let mut w = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
        let f = frame(4, 1000);
        // Captured with a snap length: orig_len is larger than both data and snaplen.
        let raw = pcap_file::pcap::RawPcapPacket {
            ts_sec: 1_700_000_000,
            ts_frac: 654_321,
            incl_len: 96,
            orig_len: 1000,
            data: Cow::Borrowed(&f[..96]),
        };
        w.write_raw_packet(&raw).unwrap();
        w.write_packet(&PcapPacket::new(Duration::new(1_700_000_001, 0), 60, &f[..60])).unwrap();
        drop(w);

        let mut port = PcapPort::open("r", 0, Some(&path), None, Pool::new(8, 2048)).unwrap();
        let got = drain(&mut port);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, &f[..96]);
        assert_eq!((got[0].1.ts_ns, got[0].1.orig_len), (1_700_000_000_654_321_000, 1000));
        assert_eq!((got[1].1.ts_ns, got[1].1.orig_len), (1_700_000_001_000_000_000, 0));
    }

    #[test]
    fn write_errors_drop_count_and_stop_writing() {
        let pool = Pool::new(1, 64);
        let mut port = PcapPort::open("full", 0, None, Some(Path::new("/dev/full")), pool).unwrap();
        let total = 320u64;
        for _ in 0..total / 32 {
            let mut burst: Burst = (0..32)
                .map(|_| Packet::from_slice(&frame(1, 1500), Meta { port: 0, ts_ns: T0, orig_len: 0 }))
                .collect();
            port.tx_burst(&mut burst);
            assert!(burst.is_empty());
        }
        let s = port.stats();
        assert!(s.tx_dropped > 0, "{s:?}");
        assert_eq!(s.tx_packets + s.tx_dropped, total);
        // Already failed: flushing does not retry a broken file, and says so.
        let err = port.flush().unwrap_err();
        assert!(err.to_string().contains("/dev/full"), "{err}");
        port.tx_burst(&mut Burst::new());
        let mut burst = Burst::new();
        burst.push(Packet::from_slice(&frame(1, 60), Meta::default()));
        assert_eq!(port.tx_burst(&mut burst), 0);
        assert_eq!(port.stats().tx_dropped, s.tx_dropped + 1);
    }

    #[test]
    fn transmit_without_an_output_file_drops_and_counts() {
        let mut port = PcapPort::open("rx-only", 0, None, None, Pool::new(1, 64)).unwrap();
        assert!(port.rx_exhausted());
        let mut burst = Burst::new();
        burst.push(Packet::from_slice(&frame(1, 60), Meta::default()));
        assert_eq!(port.tx_burst(&mut burst), 0);
        assert!(burst.is_empty());
        assert_eq!(port.stats().tx_dropped, 1);
    }
}
