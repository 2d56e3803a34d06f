//! Transport header views: TCP, UDP, SCTP, ICMP and ICMPv6 — just the fields
//! the flow key and rules need (ports, type/code, TCP flags) plus the
//! checksum field the builder fills.

use super::{be16, set_be16, Error};

/// Declares a fixed-minimum-length view with the usual smoltcp constructors.
macro_rules! l4_view {
    ($(#[$doc:meta])* $name:ident, $min:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Bytes a header must have to be usable.
            pub const HEADER_LEN: usize = $min;

            /// Wraps without checking; accessors panic on a buffer shorter
            /// than [`Self::HEADER_LEN`].
            #[inline]
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps after [`check_len`](Self::check_len).
            #[inline]
            pub fn new_checked(buffer: T) -> Result<Self, Error> {
                let header = Self::new_unchecked(buffer);
                header.check_len()?;
                Ok(header)
            }

            /// Verifies the buffer holds the fixed header.
            #[inline]
            pub fn check_len(&self) -> Result<(), Error> {
                if self.buffer.as_ref().len() < Self::HEADER_LEN {
                    Err(Error::Truncated)
                } else {
                    Ok(())
                }
            }
        }
    };
}

/// Declares `src_port`/`dst_port` (and setters) for the port-carrying headers,
/// which all put them in the first four bytes.
macro_rules! ports {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// Source port.
            #[inline(always)]
            pub fn src_port(&self) -> u16 {
                be16(self.buffer.as_ref(), port_field::SRC_PORT)
            }

            /// Destination port.
            #[inline(always)]
            pub fn dst_port(&self) -> u16 {
                be16(self.buffer.as_ref(), port_field::DST_PORT)
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Sets the source port.
            pub fn set_src_port(&mut self, value: u16) {
                set_be16(self.buffer.as_mut(), port_field::SRC_PORT, value);
            }

            /// Sets the destination port.
            pub fn set_dst_port(&mut self, value: u16) {
                set_be16(self.buffer.as_mut(), port_field::DST_PORT, value);
            }
        }
    };
}

/// Port offsets, common to TCP, UDP and SCTP.
pub mod port_field {
    /// Source port.
    pub const SRC_PORT: usize = 0;
    /// Destination port.
    pub const DST_PORT: usize = 2;
}

/// TCP field offsets beyond the ports.
pub mod tcp_field {
    /// Sequence number.
    pub const SEQ_NUM: usize = 4;
    /// Acknowledgement number.
    pub const ACK_NUM: usize = 8;
    /// Data offset (high nibble, 32-bit words).
    pub const DATA_OFF: usize = 12;
    /// Flags (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    pub const FLAGS: usize = 13;
    /// Receive window.
    pub const WINDOW: usize = 14;
    /// Checksum (pseudo-header included).
    pub const CHECKSUM: usize = 16;
}

/// TCP flag bits as found in the flags byte.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

l4_view!(
    /// A TCP header read (or written) in place.
    TcpHeader,
    20
);
ports!(TcpHeader);

impl<T: AsRef<[u8]>> TcpHeader<T> {
    /// Flags byte (see [`tcp_flags`]); rules may match on SYN/FIN/RST.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[tcp_field::FLAGS]
    }

    /// Header length in bytes from the data offset.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[tcp_field::DATA_OFF] >> 4) * 4
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp_field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpHeader<T> {
    /// Sets sequence and acknowledgement numbers.
    pub fn set_seq_ack(&mut self, seq: u32, ack: u32) {
        let d = self.buffer.as_mut();
        d[tcp_field::SEQ_NUM..tcp_field::SEQ_NUM + 4].copy_from_slice(&seq.to_be_bytes());
        d[tcp_field::ACK_NUM..tcp_field::ACK_NUM + 4].copy_from_slice(&ack.to_be_bytes());
    }

    /// Sets the data offset from a header length in bytes (a multiple of 4).
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[tcp_field::DATA_OFF] = ((len / 4) as u8) << 4;
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[tcp_field::FLAGS] = flags;
    }

    /// Sets the receive window.
    pub fn set_window(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), tcp_field::WINDOW, value);
    }

    /// Stores a checksum computed by the caller (it needs the pseudo-header).
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), tcp_field::CHECKSUM, value);
    }
}

/// UDP field offsets beyond the ports.
pub mod udp_field {
    /// Length of header plus payload.
    pub const LENGTH: usize = 4;
    /// Checksum (pseudo-header included; 0 means none over IPv4).
    pub const CHECKSUM: usize = 6;
}

l4_view!(
    /// A UDP header read (or written) in place.
    UdpHeader,
    8
);
ports!(UdpHeader);

impl<T: AsRef<[u8]>> UdpHeader<T> {
    /// Length field (header plus payload).
    #[inline]
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), udp_field::LENGTH)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), udp_field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpHeader<T> {
    /// Sets the length field.
    pub fn set_length(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), udp_field::LENGTH, value);
    }

    /// Stores a checksum computed by the caller.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), udp_field::CHECKSUM, value);
    }
}

/// SCTP common-header offsets beyond the ports.
pub mod sctp_field {
    use core::ops::Range;
    /// Verification tag.
    pub const VERIFICATION_TAG: Range<usize> = 4..8;
    /// CRC32c of the whole packet, stored little-endian as RFC 4960 app. B does.
    pub const CHECKSUM: Range<usize> = 8..12;
}

l4_view!(
    /// An SCTP common header read (or written) in place.
    SctpHeader,
    12
);
ports!(SctpHeader);

impl<T: AsRef<[u8]>> SctpHeader<T> {
    /// Verification tag.
    #[inline]
    pub fn verification_tag(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[4], d[5], d[6], d[7]])
    }

    /// CRC32c checksum as the numeric value (decoded from its little-endian bytes).
    #[inline]
    pub fn checksum(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_le_bytes([d[8], d[9], d[10], d[11]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpHeader<T> {
    /// Sets the verification tag.
    pub fn set_verification_tag(&mut self, value: u32) {
        self.buffer.as_mut()[sctp_field::VERIFICATION_TAG].copy_from_slice(&value.to_be_bytes());
    }

    /// Stores a CRC32c computed by the caller.
    pub fn set_checksum(&mut self, value: u32) {
        self.buffer.as_mut()[sctp_field::CHECKSUM].copy_from_slice(&value.to_le_bytes());
    }
}

/// ICMP / ICMPv6 offsets (same layout for both).
pub mod icmp_field {
    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum (ICMPv6: pseudo-header included).
    pub const CHECKSUM: usize = 2;
}

l4_view!(
    /// An ICMP (IPv4) header: type, code, checksum and the 4-byte
    /// rest-of-header every ICMP message carries (RFC 792).
    IcmpHeader,
    8
);

l4_view!(
    /// An ICMPv6 header: type, code, checksum (RFC 4443 §2.1: the message
    /// body that follows depends on the type).
    Icmpv6Header,
    4
);

/// Type/code accessors, identical for ICMP and ICMPv6.
macro_rules! type_code {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// Message type (stored in the flow key's `src_port`).
            #[inline]
            pub fn msg_type(&self) -> u8 {
                self.buffer.as_ref()[icmp_field::TYPE]
            }

            /// Message code (stored in the flow key's `dst_port`).
            #[inline]
            pub fn msg_code(&self) -> u8 {
                self.buffer.as_ref()[icmp_field::CODE]
            }

            /// Checksum as stored.
            #[inline]
            pub fn checksum(&self) -> u16 {
                be16(self.buffer.as_ref(), icmp_field::CHECKSUM)
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Sets type and code.
            pub fn set_type_code(&mut self, msg_type: u8, code: u8) {
                let d = self.buffer.as_mut();
                d[icmp_field::TYPE] = msg_type;
                d[icmp_field::CODE] = code;
            }

            /// Stores a checksum computed by the caller.
            pub fn set_checksum(&mut self, value: u16) {
                set_be16(self.buffer.as_mut(), icmp_field::CHECKSUM, value);
            }
        }
    };
}
type_code!(IcmpHeader);
type_code!(Icmpv6Header);

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP SYN header from a real capture: 51762 -> 443, data offset 10
    /// (40 bytes with options; only the fixed part is here).
    const TCP_SYN: [u8; 20] = [
        0xca, 0x32, 0x01, 0xbb, 0x5a, 0x1f, 0x3c, 0x01, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x9c, 0x4f,
        0x00, 0x00,
    ];
    /// DNS query UDP header 53124 -> 53, length 40.
    const UDP_DNS: [u8; 8] = [0xcf, 0x84, 0x00, 0x35, 0x00, 0x28, 0x1b, 0x2c];

    #[test]
    fn tcp_fixture() {
        let t = TcpHeader::new_checked(&TCP_SYN[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (51762, 443));
        assert_eq!(t.flags(), tcp_flags::SYN);
        assert_eq!(t.header_len(), 40);
        assert_eq!(t.checksum(), 0x9c4f);
        assert_eq!(TcpHeader::new_checked(&TCP_SYN[..19]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn udp_fixture() {
        let u = UdpHeader::new_checked(&UDP_DNS[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.length(), u.checksum()), (53124, 53, 40, 0x1b2c));
        assert!(UdpHeader::new_checked(&UDP_DNS[..7]).is_err());
    }

    #[test]
    fn sctp_and_icmp_setters_round_trip() {
        let mut buf = [0u8; 12];
        let mut s = SctpHeader::new_unchecked(&mut buf[..]);
        s.set_src_port(2905);
        s.set_dst_port(2906);
        s.set_verification_tag(0xdead_beef);
        s.set_checksum(0x0102_0304);
        assert_eq!(&buf[8..], &[4, 3, 2, 1]);
        let s = SctpHeader::new_checked(&buf[..]).unwrap();
        assert_eq!((s.src_port(), s.dst_port()), (2905, 2906));
        assert_eq!((s.verification_tag(), s.checksum()), (0xdead_beef, 0x0102_0304));
        assert!(SctpHeader::new_checked(&buf[..11]).is_err());

        let mut buf = [0u8; 8];
        let mut i = IcmpHeader::new_unchecked(&mut buf[..]);
        i.set_type_code(3, 4);
        i.set_checksum(0xabcd);
        let i = IcmpHeader::new_checked(&buf[..]).unwrap();
        assert_eq!((i.msg_type(), i.msg_code(), i.checksum()), (3, 4, 0xabcd));
        assert!(IcmpHeader::new_checked(&buf[..7]).is_err());
        let i6 = Icmpv6Header::new_checked(&buf[..4]).unwrap();
        assert_eq!((i6.msg_type(), i6.msg_code()), (3, 4));
        assert!(Icmpv6Header::new_checked(&buf[..3]).is_err());
    }

    #[test]
    fn tcp_setters_round_trip() {
        let mut buf = [0u8; 20];
        let mut t = TcpHeader::new_unchecked(&mut buf[..]);
        t.set_src_port(1);
        t.set_dst_port(2);
        t.set_seq_ack(3, 4);
        t.set_header_len(20);
        t.set_flags(tcp_flags::ACK | tcp_flags::PSH);
        t.set_window(5);
        t.set_checksum(6);
        assert_eq!(buf[4..12], [0, 0, 0, 3, 0, 0, 0, 4]);
        let t = TcpHeader::new_checked(&buf[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.header_len(), t.flags(), t.checksum()), (1, 2, 20, 0x18, 6));
    }
}
