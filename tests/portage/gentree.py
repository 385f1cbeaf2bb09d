#!/usr/bin/env python3
"""Writes (or changes) a fake Gentoo ebuild tree for the Portage proof.

gentree.py ROOT ROUND FRACTION: the first call creates 40 categories x 50
packages (about 12,000 files: ebuilds, Manifest, metadata.xml, files/) plus
profiles/ and metadata/; later calls rewrite FRACTION of the packages and
write a newer metadata/timestamp.chk, so that Portage sees a new tree.
"""
import os
import random
import sys
import time

root, round_no, fraction = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rng = random.Random(round_no)
first = not os.path.exists(os.path.join(root, "profiles/repo_name"))


def write(rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as out:
        out.write(text)


if first:
    write("profiles/repo_name", "proof\n")
    write("profiles/categories", "".join(f"cat-{c:02d}\n" for c in range(40)))
    write("profiles/base/eapi", "8\n")
    write("profiles/base/make.defaults", 'ARCH="amd64"\nACCEPT_KEYWORDS="amd64"\n')
    write("metadata/layout.conf", "masters =\nthin-manifests = true\nsign-manifests = false\n")
for c in range(40):
    for p in range(50):
        if not first and rng.random() > fraction:
            continue
        d = f"cat-{c:02d}/pkg-{p:02d}"
        for v in (1, 2):
            write(f"{d}/pkg-{p:02d}-{v}.0.ebuild",
                  f'EAPI=8\nDESCRIPTION="package {p} round {round_no}"\nSLOT="0"\nKEYWORDS="amd64"\n')
        write(f"{d}/Manifest", f"DIST pkg-{p:02d}-1.0.tar.gz {1000 + round_no} BLAKE2B {'ab' * 64}\n")
        write(f"{d}/metadata.xml", f"<?xml version=\"1.0\"?>\n<pkgmetadata>{round_no}</pkgmetadata>\n")
        write(f"{d}/files/fix-{p}.patch", f"--- a\n+++ b\n@@ -1 +1 @@\n-{round_no - 1}\n+{round_no}\n")
        write(f"{d}/files/conf-{p}", f"round={round_no}\n")
stamp = time.gmtime(time.time() + round_no)
write("metadata/timestamp.chk", time.strftime("%a, %d %b %Y %H:%M:%S +0000\n", stamp))
