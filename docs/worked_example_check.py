#!/usr/bin/env python3
"""Independent check of a MAIF 3.1 single file (docs/FORMAT.md, section 18).

Usage: worked_example_check.py FILE PUBLIC_KEY_HEX

Shares no code with the crate: hashlib for SHA-256, a table CRC32C written here (zlib's
crc32 is a different polynomial), and the `cryptography` package for Ed25519. It walks the
commits from the last trailer back to commit 0, then re-derives and checks every digest,
link, frontier, root, CRC and signature forwards. It prints each check and exits 1 on the
first failure.
"""
import hashlib
import json
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def tag(name):
    return b"MAIF-3.1/" + name + b"\0"


def sha(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


CRC_TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    CRC_TABLE.append(c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        sys.exit(1)


def u64(b, at):
    return struct.unpack_from("<Q", b, at)[0]


def leaf(d):
    return sha(b"\x00", d)


def node(l, r):
    return sha(b"\x01", l, r)


def root_of(frontier):
    if not frontier:
        return sha()
    root = frontier[-1]
    for left in reversed(frontier[:-1]):
        root = node(left, root)
    return root


def main(path, key_hex):
    img = open(path, "rb").read()
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))

    def verify(signature, message, what):
        try:
            key.verify(signature, message)
            check(True, what)
        except Exception:
            check(False, what)

    check(crc32c(b"123456789") == 0xE3069283, "CRC32C test vector 123456789 = e3069283")
    check(img[:4] == b"MAIF" and img[4:6] == b"\x03\x01", "file header: magic MAIF, version 3.1")
    meta_len = struct.unpack_from("<I", img, 32)[0]
    base_len = 36 + meta_len
    meta = json.loads(img[36:base_len])
    check(meta["public_key"] == key_hex, "metadata public_key is the given key")
    genesis = sha(tag(b"genesis"), img[:32], img[32:base_len])
    print("     chain seed " + genesis.hex())

    # Find the commits: the last 60 bytes are the newest trailer; each segment names the
    # previous one.
    segments = []
    at = u64(img, len(img) - 60 + 8)
    while True:
        segments.append(at)
        if u64(img, at + 8) == 0:
            break
        at = u64(img, at + 168)
    segments.reverse()

    frontier, size, expected, versions = [], 0, {}, {}
    previous_commit, last_record, prov_head = bytes(32), genesis, bytes(32)
    end = base_len
    for seq, so in enumerate(segments):
        h = img[so:so + 352]
        check(h[:8] == b"MAIFSEGM" and u64(h, 8) == seq and u64(h, 24) == so,
              f"commit {seq}: segment header at {so}")
        seg_len, records_start, record_count = u64(h, 32), u64(h, 40), u64(h, 48)
        prov_added, prov_len, run_len = u64(h, 72), u64(h, 80), u64(h, 88)
        check(records_start == end, f"commit {seq}: records start where commit {seq - 1} ends ({end})"
              if seq else f"commit 0: starts after the base ({end})")
        check(h[104:136] == genesis and h[136:168] == previous_commit,
              f"commit {seq}: names the chain seed and the previous commit digest")
        # Records: back to back from records_start to the segment.
        at = records_start
        while at < so:
            rh = img[at:at + 64]
            mlen, dsize = struct.unpack_from("<I", rh, 24)[0], u64(rh, 32)
            rlen = 128 + mlen + dsize
            content = sha(tag(b"content"), img[at + 64:at + 64 + mlen + dsize])
            digest = sha(tag(b"block"), rh, content)
            block_id = rh[:16]
            versions[block_id] = versions.get(block_id, 0) + 1
            expected[size] = (struct.pack("<QQ", at, rlen) + rh[:20] + rh[24:28] + rh[48:56]
                              + digest + struct.pack("<QI", size, versions[block_id]))
            check(rh[56:64] == last_record[:8], f"record {size} at {at}: prev_link = {last_record[:8].hex()}")
            verify(img[at + rlen - 64:at + rlen], tag(b"sign/block") + digest,
                   f"record {size}: block signature over digest {digest.hex()}")
            # Frontier append: one leaf hash, one node hash per completed subtree.
            h_new, s = leaf(digest), size
            while s & 1:
                h_new = node(frontier.pop(), h_new)
                s >>= 1
            frontier.append(h_new)
            size, last_record, at = size + 1, digest, at + rlen
        check(at == so and record_count == size, f"commit {seq}: {size} records, ending at the segment")
        check(h[176:208] == last_record, f"commit {seq}: last_record_digest")
        fr_len = 32 * len(frontier)
        stored = img[so + 416:so + 416 + fr_len]
        check(stored == b"".join(frontier), f"commit {seq}: frontier of {len(frontier)} hashes recomputed")
        root = root_of(frontier)
        check(h[240:272] == root, f"commit {seq}: Merkle root {root.hex()}")
        digest = sha(tag(b"commit"), h, stored)
        verify(img[so + 352:so + 416], tag(b"sign/commit") + digest,
               f"commit {seq}: commit signature over commit digest {digest.hex()}")
        run_at = so + 416 + fr_len
        if run_len:
            run = img[run_at:run_at + run_len]
            count, pages = u64(run, 8), u64(run, 16)
            head_len = 112 + 56 * pages
            head_digest = sha(tag(b"run"), run[:head_len])
            check(h[272 + 32:272 + 64] == head_digest and u64(h, 272 + 24) == head_len,
                  f"commit {seq}: run head digest {head_digest.hex()} ({count} entries)")
            for p in range(pages):
                d = run[112 + 56 * p:112 + 56 * (p + 1)]
                n = min(512, count - 512 * p)
                page = run[head_len + 92 * 512 * p:head_len + 92 * (512 * p + n)]
                check(d[24:56] == sha(tag(b"run-page"), page), f"commit {seq}: run page {p} digest")
                for e in range(n):
                    entry = page[92 * e:92 * e + 92]
                    position = u64(entry, 80)
                    check(expected.get(position) == entry,
                          f"commit {seq}: run entry for record {position} matches the record")
        prov = img[run_at + run_len:run_at + run_len + prov_len]
        at = 0
        for _ in range(prov_added):
            dlen = struct.unpack_from("<I", prov, at + 4)[0]
            check(prov[at + 16:at + 48] == prov_head, f"commit {seq}: provenance entry links to {prov_head.hex()[:16]}...")
            prov_head = sha(tag(b"provenance"), prov[at:at + 80 + dlen])
            at += 80 + dlen
        check(at == prov_len and h[208:240] == prov_head, f"commit {seq}: provenance head {prov_head.hex()}")
        t = img[so + seg_len:so + seg_len + 60]
        check(t[:8] == b"MAIFTRLR" and u64(t, 8) == so and u64(t, 16) == seg_len and t[28:60] == root,
              f"commit {seq}: trailer at {so + seg_len} locates the segment and carries the root")
        crc = crc32c(t[:24] + t[28:60])
        check(struct.unpack_from("<I", t, 24)[0] == crc, f"commit {seq}: trailer CRC32C {crc:08x}")
        previous_commit, end = digest, so + seg_len + 60
    check(end == len(img) and img[-32:] == root, f"the file ends at {end} with the Merkle root")
    print("all checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
