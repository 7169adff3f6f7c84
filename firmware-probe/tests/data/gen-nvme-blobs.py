#!/usr/bin/env python3
"""Writes the canned NVMe blobs used by the decoder tests, field by field from the NVMe Base
Specification 2.0 offsets (Identify Controller: figure 275; SMART / Health log: figure 207).
Run from this directory: python3 gen-nvme-blobs.py"""
import struct

def put(buf, off, data):
    buf[off:off + len(data)] = data

def identify():
    b = bytearray(4096)
    put(b, 0, struct.pack('<H', 0x144d))                 # VID
    put(b, 2, struct.pack('<H', 0x144d))                 # SSVID
    put(b, 4, b'S5GXNX0R123456A'.ljust(20))              # SN
    put(b, 24, b'Samsung SSD 980 PRO 1TB'.ljust(40))     # MN
    put(b, 64, b'5B2QGXA7')                              # FR
    b[72] = 2                                            # RAB
    put(b, 73, bytes([0x38, 0x25, 0x00]))                # IEEE OUI 002538, little endian
    b[77] = 9                                            # MDTS
    put(b, 78, struct.pack('<H', 6))                     # CNTLID
    put(b, 80, struct.pack('<I', 0x00010400))            # VER 1.4.0
    put(b, 256, struct.pack('<H', 0x0017))               # OACS
    b[260] = 0x16                                        # FRMW
    b[261] = 0x0f                                        # LPA
    b[262] = 63                                          # ELPE
    put(b, 266, struct.pack('<H', 355))                  # WCTEMP 82 C
    put(b, 268, struct.pack('<H', 358))                  # CCTEMP 85 C
    put(b, 280, (1000204886016).to_bytes(16, 'little'))  # TNVMCAP
    b[512] = 0x66                                        # SQES
    b[513] = 0x44                                        # CQES
    put(b, 516, struct.pack('<I', 1))                    # NN
    put(b, 768, b'nqn.1994-11.com.samsung:nvme:980PRO:M.2:S5GXNX0R123456A')  # SUBNQN
    return b

def smart(critical, temp_k, spare, thresh, used, counters, media, errlog, wtemp, ctemp):
    b = bytearray(512)
    b[0] = critical
    put(b, 1, struct.pack('<H', temp_k))
    b[3], b[4], b[5] = spare, thresh, used
    for off, value in zip(range(32, 160, 16), counters):
        put(b, off, value.to_bytes(16, 'little'))
    put(b, 160, media.to_bytes(16, 'little'))
    put(b, 176, errlog.to_bytes(16, 'little'))
    put(b, 192, struct.pack('<I', wtemp))
    put(b, 196, struct.pack('<I', ctemp))
    put(b, 200, struct.pack('<H', temp_k))               # temperature sensor 1
    put(b, 202, struct.pack('<H', temp_k + 8))           # temperature sensor 2
    return b

# data units read, written, host reads, host writes, busy minutes, power cycles, POH, unsafe
healthy = smart(0x00, 310, 100, 10, 3,
                [43120559, 61347897, 812345678, 1234567890, 1572, 1130, 7912, 61],
                0, 2145, 7, 1)
worn = smart(0x05, 352, 5, 10, 104,
             [912345678, 2345678901, 9876543210, 19876543210, 88321, 4012, 39120, 402],
             12, 5120, 1440, 35)

open('nvme-identify-980pro.bin', 'wb').write(identify())
open('nvme-smart-healthy.bin', 'wb').write(healthy)
open('nvme-smart-worn.bin', 'wb').write(worn)
