# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

RUST_MIN_VER="1.89"

inherit cargo git-r3 shell-completion systemd

DESCRIPTION="Run repository syncs (emerge --sync and friends) under one machine-wide lock"
# Point EGIT_REPO_URI at the synclock repository you build from.
HOMEPAGE="https://github.com/synclock/synclock"
EGIT_REPO_URI="https://github.com/synclock/synclock.git"

LICENSE="GPL-2+"
# Dependent crate licenses
LICENSE+=" Apache-2.0 MIT Unicode-3.0"
SLOT="0"
IUSE="shims"
# The tests start real processes as root (unshare, setpriv, mount) and the
# proof fetches Portage from PyPI: run them from a checkout, not here.
# They need: util-linux, procps, rsync, dev-vcs/git, dev-lang/python.
RESTRICT="test"

QA_FLAGS_IGNORED="usr/bin/synclock"

src_unpack() {
	git-r3_src_unpack
	cargo_live_src_unpack
}

src_install() {
	cargo_src_install
	doman contrib/man/*.1
	newbashcomp contrib/completions/synclock.bash synclock
	dozshcomp contrib/completions/_synclock
	dofishcomp contrib/completions/synclock.fish
	dodoc README.md

	if use shims; then
		exeinto /usr/libexec/synclock/shims
		doexe contrib/shims/synclock-shim
		local name
		for name in emerge emaint emerge-webrsync emerge-delta-webrsync eix-sync; do
			dosym synclock-shim /usr/libexec/synclock/shims/${name}
		done
	fi
	# Harmless until enabled.
	systemd_dounit contrib/systemd/synclock-sync.{service,timer}
	exeinto /usr/share/synclock/cron
	doexe contrib/cron/synclock-sync
}

pkg_postinst() {
	if use shims; then
		elog "To put every sync through synclock, put the shims first in PATH,"
		elog "e.g. in /etc/env.d/00synclock: PATH=\"/usr/libexec/synclock/shims\""
		elog "(then env-update), or link them into /usr/local/sbin."
	fi
	elog "Daily sync: systemctl enable --now synclock-sync.timer, or"
	elog "ln -s /usr/share/synclock/cron/synclock-sync /etc/cron.daily/"
}
