"""Every module a target imports is declared in Package.swift: a target it depends on,
a product it names, or the toolchain's own (Foundation, Glibc, Testing, ...). SwiftPM
builds an undeclared import as long as another target pulled the module in, until
it does not; this check fails on the first one instead."""

import json
import os
import re
import subprocess
import sys

TOOLCHAIN = {"Foundation", "FoundationEssentials", "FoundationNetworking", "Glibc", "SwiftGlibc", "Dispatch",
             "Synchronization", "Testing", "XCTest", "_Concurrency", "os", "Darwin"}
IMPORT = re.compile(r"^(?:@\w+\s+)*import\s+(?:(?:struct|class|enum|protocol|func|var|let|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)", re.M)

def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    manifest = json.loads(subprocess.run(["swift", "package", "dump-package"], cwd=root, capture_output=True, text=True,
                                         check=True).stdout)
    failures = []
    for t in manifest["targets"]:
        declared = set()
        for dep in t["dependencies"]:
            kind, value = next(iter(dep.items()))
            declared.add(value[0])
        base = t.get("path") or os.path.join("Tests" if t["type"] == "test" else "Sources", t["name"])
        for top, _, files in os.walk(os.path.join(root, base)):
            for f in files:
                if not f.endswith(".swift"):
                    continue
                path = os.path.join(top, f)
                with open(path) as fh:
                    for module in IMPORT.findall(fh.read()):
                        if module not in declared and module not in TOOLCHAIN and module != t["name"]:
                            failures.append("%s: imports %s, which target %s does not declare in Package.swift"
                                            % (os.path.relpath(path, root), module, t["name"]))
    for line in sorted(set(failures)):
        print(line, file=sys.stderr)
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
