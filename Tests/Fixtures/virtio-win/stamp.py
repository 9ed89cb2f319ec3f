#!/usr/bin/env python3
"""Stamps virtio-win's INF sources the way its build does, for the Win10 and Win11 configurations.

Usage: stamp.py GIT_DIR COMMIT OUT_DIR
Reads the sources from the bare git repository of virtio-win/kvm-guest-drivers-windows at COMMIT and writes
OUT_DIR/win10/{amd64,x86}/*.inf and OUT_DIR/win11/amd64/*.inf (CRLF, as a Windows checkout has them).

What the build does (read from the repository at that commit):
- NetKVM/GenerateInf.bat composes netkvm.inx: netkvm-base.txt + netkvm-add-uso.txt; the "Win11 Release|x64"
  configuration of NetKVM-VS2015.vcxproj uses netkvmpoll.inx instead (+ netkvm-add-poll.txt).
- stampinf (WDK): `$ARCH$` becomes InfArch (build/Driver.Common.props: `<arch>.10.0` for Win10,
  `<arch>.10.0...16299` for Win11), `$KMDFVERSION$` the KMDF version (build/Driver.Initial.props: 1.15 for
  TargetVersion Windows10, which every configuration uses), and the DriverVer line the date and STAMPINF_VERSION
  (build/Driver.RHEL.props: _NT_TARGET_MAJ.6.101.58000 = 100.6.101.58000). The date is fixed here to the commit's
  date so that the output is reproducible (stampinf takes the build day).
- SubstituteFileContent (build/Driver.Common.targets) with the Substitution items of build/Driver.Common.props,
  build/Driver.Vendor.props and build/Driver.RHEL.props (default vendor RHEL).
"""
import re, subprocess, sys, os

git_dir, commit, out = sys.argv[1], sys.argv[2], sys.argv[3]
DATE = "07/22/2026"
VERSION = "100.6.101.58000"
KMDF = "1.15"
CURRENT_YEAR = 2026

def show(path):
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                          capture_output=True).stdout.decode("utf-8")

# name -> (sources, copyright starting year from build/Driver.RHEL.props)
SOURCES = {
    "viostor": (["viostor/viostor.inx"], 2008),
    "vioscsi": (["vioscsi/vioscsi.inx"], 2012),
    "netkvm": (["NetKVM/netkvm-base.txt", "NetKVM/netkvm-add-uso.txt"], 2008),
    "balloon": (["Balloon/sys/balloon.inx"], 2009),
    "vioser": (["vioserial/sys/vioser.inx"], 2010),
    "viorng": (["viorng/viorng/viorng.inf"], 2014),
    "pvpanic": (["pvpanic/pvpanic/pvpanic.inf"], 2015),
    "fwcfg": (["fwcfg64/fwcfg.inf"], 2018),
    "qemufwcfg": (["fwcfg/qemufwcfg.inf"], None),  # shipped as is (already stamped, no tokens)
}

def substitutions(config, start_year):
    years = f"{start_year}-{CURRENT_YEAR}" if start_year and start_year != CURRENT_YEAR else str(CURRENT_YEAR)
    win10 = config == "win10"
    return {
        # build/Driver.Common.props
        "INX_PLATFORM_DRIVERS_DIR": "12" if win10 else "13",
        "INX_BASE_ON_SYSTEM_ROOT_DRIVER_DIR": "%%SystemRoot%%\\System32\\drivers" if win10 else "%13%",
        "INX_NETKVM_DMAREMAP": "0" if win10 else "2",
        # build/Driver.Vendor.props
        "_INX_SUBSYS_VENDOR_ID": "1AF4",
        # build/Driver.RHEL.props
        "INX_COPYRIGHT_1": f"Copyright (c) {years} Red Hat Inc.",
        "INX_COPYRIGHT_2": "",
        "INX_COMPANY": "Red Hat, Inc.",
        "INX_PREFIX_VENDOR": "Red Hat ",
        "INX_PREFIX_VIRTIO": "",
        "INX_PREFIX_QEMU": "",
        "INX_NETKVM_SEPARATE_TAIL": "1",
    }

def stampinf(text, infarch):
    text = text.replace("$ARCH$", infarch).replace("$KMDFVERSION$", KMDF)
    # stampinf rewrites the DriverVer line of [Version] (comment included).
    return re.sub(r"(?im)^[ \t]*DriverVer[ \t]*=.*$", f"DriverVer = {DATE},{VERSION}", text, count=1)

for config, arches in (("win10", ["amd64", "x86"]), ("win11", ["amd64"])):
    for arch in arches:
        infarch = f"{arch}.10.0" if config == "win10" else f"{arch}.10.0...16299"
        d = os.path.join(out, config, arch)
        os.makedirs(d, exist_ok=True)
        for name, (paths, year) in SOURCES.items():
            if name == "netkvm" and config == "win11" and arch == "amd64":
                paths = paths + ["NetKVM/netkvm-add-poll.txt"]
            # `copy /y a + b` concatenates the files as they are.
            text = "".join(show(p) for p in paths)
            if year is not None:
                text = stampinf(text, infarch)
                subs = substitutions(config, year)
                # One pass over the text with all keys as alternatives, as SubstituteFileContent does.
                text = re.sub("|".join(re.escape(k) for k in subs), lambda m: subs[m.group(0)], text)
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
            with open(os.path.join(d, name + ".inf"), "w", newline="") as f:
                f.write(text)
