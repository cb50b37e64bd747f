import ArgumentParser
import Foundation

/// `petrel init DIR --runtime R`: a function to start from, with its own test, that
/// `petrel deploy` takes as it is.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a new function's folder: a handler, its test, and how to deploy it.")

    @Argument(help: "The folder to make (its name is the function's, unless --name says otherwise).") var directory: String
    @Option(help: "python3.11 or nodejs20.x.") var runtime = "python3.11"
    @Option(help: "The function's name (default: the folder's).") var name: String?

    struct Template {
        var handler: String
        var files: [(String, String)]
        var test: String
    }

    static func template(_ runtime: String) -> Template? {
        switch runtime {
        case "python3.11", "python3.12", "python3.13":
            return Template(
                handler: "app.handler",
                files: [
                    (
                        "app.py",
                        """
                        import json


                        def handler(event, context):
                            \"\"\"Answers {"message": "hello NAME"} for {"name": NAME} (NAME defaults to world).\"\"\"
                            name = (event or {}).get("name", "world")
                            print(json.dumps({"greeting_for": name}))
                            return {"message": "hello " + name}

                        """
                    ),
                    (
                        "test_app.py",
                        """
                        import unittest

                        from app import handler


                        class HandlerTest(unittest.TestCase):
                            def test_greets_by_name(self):
                                self.assertEqual(handler({"name": "petrel"}, None), {"message": "hello petrel"})

                            def test_greets_the_world_by_default(self):
                                self.assertEqual(handler({}, None), {"message": "hello world"})


                        if __name__ == "__main__":
                            unittest.main()

                        """
                    ),
                ],
                test: "python3 -m unittest")
        case "nodejs18.x", "nodejs20.x", "nodejs22.x":
            return Template(
                handler: "index.handler",
                files: [
                    (
                        "index.js",
                        """
                        // Answers {"message": "hello NAME"} for {"name": NAME} (NAME defaults to world).
                        exports.handler = async (event) => {
                          const name = (event && event.name) || "world";
                          console.log(JSON.stringify({ greeting_for: name }));
                          return { message: "hello " + name };
                        };

                        """
                    ),
                    (
                        "index.test.js",
                        """
                        const test = require("node:test");
                        const assert = require("node:assert");
                        const { handler } = require("./index.js");

                        test("greets by name", async () => {
                          assert.deepStrictEqual(await handler({ name: "petrel" }), { message: "hello petrel" });
                        });

                        test("greets the world by default", async () => {
                          assert.deepStrictEqual(await handler({}), { message: "hello world" });
                        });

                        """
                    ),
                ],
                test: "node --test")
        default:
            return nil
        }
    }

    func run() throws {
        guard let t = Self.template(runtime) else {
            throw ValidationError(
                "petrel init makes python3.x and nodejs functions; \(runtime) is not one of Petrel's runtimes yet (Java, Ruby and Go are to come)"
            )
        }
        let fm = FileManager.default
        guard !fm.fileExists(atPath: directory) else { throw ValidationError("\(directory) exists already: give a new folder") }
        let functionName = name ?? URL(fileURLWithPath: directory).lastPathComponent
        guard !functionName.isEmpty, functionName.utf8.count <= 64,
            functionName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw ValidationError("\(functionName) is not a function name (letters, digits, - and _, 64 at most): give --name")
        }
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let deploy = "petrel deploy . --name \(functionName) --runtime \(runtime) --handler \(t.handler)"
        let readme = """
            # \(functionName)

            A \(runtime) function for Petrel (or AWS Lambda: the handler is Lambda's).

            ```sh
            \(t.test)                      # its test, locally
            \(deploy)
            petrel invoke \(functionName) --payload '{"name": "petrel"}'
            petrel logs \(functionName) --since 10m
            ```

            """
        for (file, text) in t.files + [("README.md", readme)] {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory).appendingPathComponent(file))
        }
        print("made \(directory): \(t.files.map(\.0).joined(separator: ", ")), README.md")
        print("  test it:    cd \(directory) && \(t.test)")
        print("  deploy it:  cd \(directory) && \(deploy)")
    }
}
