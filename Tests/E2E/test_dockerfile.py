"""Issue 27 (the container image): the Dockerfile cannot be built here (no Docker engine), so
its steps are checked: every package it installs exists in Debian (bookworm, the images'
base), the build stage installs every -dev package Scripts/setup installs for the build,
and the runtime stage installs the package of every library petreld links (the Swift
runtime and Debian's base excepted: the swift slim image carries them)."""

import os
import re
import subprocess
import unittest

from harness import PETRELD, REPO

# In every Debian image, the swift slim one included.
BASE = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def stages():
    """The packages each stage's apt-get install names."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    out = []
    for stage in re.split(r"^FROM ", text, flags=re.M)[1:]:
        names = set()
        for m in re.finditer(r"apt-get install ([^&>]*)", stage):
            names |= {w for w in m.group(1).split() if not w.startswith("-")}
        out.append(names)
    return out


def package_of(path):
    """The Debian package that ships a library (its path with and without /usr, as usrmerge leaves it)."""
    for p in (path, path.replace("/lib/", "/usr/lib/", 1) if path.startswith("/lib/") else path.replace("/usr/lib/", "/lib/", 1)):
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0]
    return None


class Dockerfile(unittest.TestCase):
    def test_the_packages_exist(self):
        build, runtime = stages()
        for name in sorted(build | runtime):
            r = subprocess.run(["apt-cache", "show", name], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, "%s is not a Debian package here" % name)

    def test_the_build_stage_has_what_the_build_needs(self):
        build, _ = stages()
        with open(os.path.join(REPO, "Scripts", "setup")) as f:
            setup = f.read()
        # (libc6-dev is for the tests' probe, and in the swift image anyway.)
        needed = set(re.findall(r"\b(lib[a-z0-9.+-]+-dev)\b", setup.split("missing=()")[0])) - {"libc6-dev"}
        self.assertIn("librdkafka-dev", needed)
        self.assertEqual(needed - build, set(), "the Dockerfile's build stage lacks these -dev packages")

    def test_the_runtime_stage_has_every_library_petreld_links(self):
        _, runtime = stages()
        needed = subprocess.run(["readelf", "-d", PETRELD], capture_output=True, text=True, check=True).stdout
        sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", needed)
        self.assertIn("librdkafka.so.1", sonames)
        resolved = {}
        for line in subprocess.run(["ldd", PETRELD], capture_output=True, text=True, check=True).stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>":
                resolved[parts[0]] = parts[2]
        missing = []
        for soname in sonames:
            if soname.startswith("ld-linux"):
                continue  # the dynamic loader: libc6's
            path = resolved.get(soname)
            self.assertIsNotNone(path, soname)
            if "/swift/" in path:
                continue  # the Swift runtime: the swift image's own
            package = package_of(os.path.realpath(path)) or package_of(path)
            self.assertIsNotNone(package, path)
            package = package.split(":")[0]
            if package not in runtime | BASE:
                missing.append("%s (%s)" % (package, soname))
        self.assertEqual(missing, [], "the Dockerfile's runtime stage lacks the packages of these libraries")


if __name__ == "__main__":
    unittest.main()
