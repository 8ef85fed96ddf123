#!/usr/bin/env python3
"""How the page cache holds files: pages in large folios vs single 4 KiB pages.

    sudo python3 benches/folios.py FILE...

For each file: its pages, the large folios they are in (heads) and the pages that are single
4 KiB folios. Needs root (/proc/kpageflags). Pages not in the cache are faulted in by reading
through a read-only mapping, so run it on files that are already cached to see their state.

Why it matters: `sendfile` walks a file's folios, and at 1000 connections on 2 MiB objects the
same nginx measured 0.15-0.16 s of CPU per GB sent from 2 MiB folios and 0.19 from 4 KiB pages
(docs/bench-log/2026-11-28-page-cache-folios-and-cold-fetch.md). A file's folios are sized by how it entered the cache: by the write
sizes when it was written, 4 KiB pages when read in by readahead on the development kernel.
"""

import mmap
import os
import struct
import sys

PAGE = 4096
KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16


def mapping_start(path):
    real = os.path.realpath(path)
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(real):
                return int(line.split("-")[0], 16)
    raise RuntimeError(f"{path}: mapping not found")


def folios(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0, 0
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        try:
            pages = (size + PAGE - 1) // PAGE
            for i in range(pages):
                m[i * PAGE]  # map the page (reads it in if it was not cached)
            start = mapping_start(path)
            heads = singles = 0
            with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
                for i in range(pages):
                    pm.seek((start // PAGE + i) * 8)
                    entry = struct.unpack("Q", pm.read(8))[0]
                    if not entry >> 63:
                        continue
                    kf.seek((entry & ((1 << 55) - 1)) * 8)
                    flags = struct.unpack("Q", kf.read(8))[0]
                    if flags & KPF_COMPOUND_HEAD:
                        heads += 1
                    elif not flags & KPF_COMPOUND_TAIL:
                        singles += 1
            return pages, heads, singles
        finally:
            m.close()
    finally:
        os.close(fd)


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip())
        return 2
    for path in sys.argv[1:]:
        pages, heads, singles = folios(path)
        folio_count = heads + singles
        avg = pages / folio_count if folio_count else 0
        print(
            f"{path}: {pages} pages, {heads} large folios, {singles} single pages, "
            f"{avg:.1f} pages per folio"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
