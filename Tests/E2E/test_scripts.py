"""The README's commands as an operator runs them."""

import os
import subprocess
import unittest

from harness import PETRELD, REPO


def run_script(*args, **env):
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([os.path.join(REPO, "Scripts", "run")] + list(args), capture_output=True, text=True,
                          env=full, timeout=60)


class RunScriptTest(unittest.TestCase):
    def test_scripts_run_builds_and_starts_the_release_configuration(self):
        # What operators run and load-test must be the optimized build.
        r = run_script("serve", "--listen", "127.0.0.1:9123", PETREL_RUN_DRY_RUN="1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            "swift_build -c release --product petreld",
            "swift_build -c release --product petrel-init",
            "exec .build/release/petreld serve --listen 127.0.0.1:9123",
        ])

    def test_a_debug_build_only_when_asked_for(self):
        r = run_script(PETREL_RUN_DRY_RUN="1", PETREL_BUILD="debug")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("swift_build -c debug --product petreld", r.stdout)
        self.assertIn("exec .build/debug/petreld", r.stdout)
        r = run_script(PETREL_RUN_DRY_RUN="1", PETREL_BUILD="fast")
        self.assertEqual(r.returncode, 2)
        self.assertIn("PETREL_BUILD is 'release' (the default) or 'debug', not 'fast'", r.stderr)

    def test_petreld_says_which_build_it_is(self):
        r = subprocess.run([PETRELD, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        expected = "release" if "/release/" in os.path.realpath(PETRELD) else "debug"
        self.assertRegex(r.stdout.strip(), r"^petreld \d+\.\d+\.\d+ \(%s build\)$" % expected)


if __name__ == "__main__":
    unittest.main()
