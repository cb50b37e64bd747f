import ArgumentParser
import Foundation

/// `petrel init DIR --runtime R`: a function to start from, with its own test, that
/// `petrel deploy` takes as it is.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a new function's folder: a handler, its test, and how to deploy it.")

    @Argument(help: "The folder to make (its name is the function's, unless --name says otherwise).") var directory: String
    @Option(help: "python3.11, nodejs20.x, ruby3.1, or go (a Go bootstrap on provided.al2023).") var runtime = "python3.11"
    @Option(help: "The function's name (default: the folder's).") var name: String?

    struct Template {
        var handler: String?
        var files: [(String, String)]
        var test: String
        /// What makes the deployable folder, when something must be built.
        var build: String? = nil
        /// The runtime the function is deployed with (default: the one asked for).
        var deployRuntime: String? = nil
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
        case "ruby3.1":
            return Template(
                handler: "lambda_function.lambda_handler",
                files: [
                    (
                        "lambda_function.rb",
                        """
                        require 'json'

                        # Answers {"message": "hello NAME"} for {"name": NAME} (NAME defaults to world).
                        def lambda_handler(event:, context:)
                          name = (event.is_a?(Hash) && event['name']) || 'world'
                          puts JSON.generate({ 'greeting_for' => name })
                          { 'message' => "hello #{name}" }
                        end

                        """
                    ),
                    (
                        "test_lambda_function.rb",
                        """
                        require 'minitest/autorun'
                        require_relative 'lambda_function'

                        class HandlerTest < Minitest::Test
                          def test_greets_by_name
                            assert_equal({ 'message' => 'hello petrel' }, lambda_handler(event: { 'name' => 'petrel' }, context: nil))
                          end

                          def test_greets_the_world_by_default
                            assert_equal({ 'message' => 'hello world' }, lambda_handler(event: {}, context: nil))
                          end
                        end

                        """
                    ),
                ],
                test: "ruby test_lambda_function.rb")
        case "go", "provided.al2023", "provided.al2":
            return goTemplate(runtime == "go" ? "provided.al2023" : runtime)
        default:
            return nil
        }
    }

    /// Go on an OS-only runtime, as on Lambda: a static binary named `bootstrap` that speaks
    /// the Runtime API itself (here with Go's standard library only, so it builds offline).
    static func goTemplate(_ runtime: String) -> Template {
        Template(
            handler: nil,
            files: [
                (
                    "go.mod",
                    """
                    module function

                    go 1.19

                    """
                ),
                (
                    "handler.go",
                    """
                    package main

                    import (
                    	"encoding/json"
                    	"fmt"
                    )

                    // handle answers {"message": "hello NAME"} for {"name": NAME} (NAME defaults to world).
                    func handle(event map[string]any) (map[string]any, error) {
                    	name, _ := event["name"].(string)
                    	if name == "" {
                    		name = "world"
                    	}
                    	line, _ := json.Marshal(map[string]string{"greeting_for": name})
                    	fmt.Println(string(line))
                    	return map[string]any{"message": "hello " + name}, nil
                    }

                    """
                ),
                (
                    "handler_test.go",
                    """
                    package main

                    import "testing"

                    func TestGreetsByName(t *testing.T) {
                    	out, err := handle(map[string]any{"name": "petrel"})
                    	if err != nil || out["message"] != "hello petrel" {
                    		t.Fatalf("got %v, %v", out, err)
                    	}
                    }

                    func TestGreetsTheWorldByDefault(t *testing.T) {
                    	out, err := handle(map[string]any{})
                    	if err != nil || out["message"] != "hello world" {
                    		t.Fatalf("got %v, %v", out, err)
                    	}
                    }

                    """
                ),
                (
                    "main.go",
                    """
                    package main

                    // The Runtime API loop: the next event, the handler, its answer or its error.

                    import (
                    	"bytes"
                    	"encoding/json"
                    	"fmt"
                    	"io"
                    	"net/http"
                    	"os"
                    )

                    func main() {
                    	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/invocation/"
                    	for {
                    		resp, err := http.Get(api + "next")
                    		if err != nil {
                    			fmt.Fprintln(os.Stderr, "the Runtime API:", err)
                    			os.Exit(1)
                    		}
                    		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
                    		body, _ := io.ReadAll(resp.Body)
                    		resp.Body.Close()
                    		event := map[string]any{}
                    		var out []byte
                    		if err = json.Unmarshal(body, &event); err == nil {
                    			var result map[string]any
                    			if result, err = handle(event); err == nil {
                    				out, err = json.Marshal(result)
                    			}
                    		}
                    		if err != nil {
                    			doc, _ := json.Marshal(map[string]string{"errorMessage": err.Error(), "errorType": "HandlerError"})
                    			post(api+id+"/error", doc, "HandlerError")
                    			continue
                    		}
                    		post(api+id+"/response", out, "")
                    	}
                    }

                    func post(url string, body []byte, errorType string) {
                    	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
                    	if errorType != "" {
                    		req.Header.Set("Lambda-Runtime-Function-Error-Type", errorType)
                    	}
                    	resp, err := http.DefaultClient.Do(req)
                    	if err != nil {
                    		fmt.Fprintln(os.Stderr, "the Runtime API:", err)
                    		os.Exit(1)
                    	}
                    	resp.Body.Close()
                    }

                    """
                ),
            ],
            test: "go test ./...",
            build: "CGO_ENABLED=0 go build -o bootstrap .",
            deployRuntime: runtime)
    }

    func run() throws {
        guard let t = Self.template(runtime) else {
            throw ValidationError(
                "petrel init makes python3.x, nodejs, ruby3.1 and go functions; \(runtime) is not one of Petrel's runtimes yet (Java is to come)"
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
        let deploy =
            "petrel deploy . --name \(functionName) --runtime \(t.deployRuntime ?? runtime)" + (t.handler.map { " --handler \($0)" } ?? "")
        let build = t.build.map { "\($0)   # the deployable folder\n" } ?? ""
        let readme = """
            # \(functionName)

            \(t.handler == nil ? "A Go function on \(t.deployRuntime ?? runtime): its `bootstrap` speaks the Lambda Runtime API, so it runs on AWS Lambda too." : "A \(runtime) function for Petrel (or AWS Lambda: the handler is Lambda's).")

            ```sh
            \(t.test)                      # its test, locally
            \(build)\(deploy)
            petrel invoke \(functionName) --payload '{"name": "petrel"}'
            petrel logs \(functionName) --since 10m
            ```

            """
        for (file, text) in t.files + [("README.md", readme)] {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory).appendingPathComponent(file))
        }
        print("made \(directory): \(t.files.map(\.0).joined(separator: ", ")), README.md")
        print("  test it:    cd \(directory) && \(t.test)")
        if let b = t.build { print("  build it:   cd \(directory) && \(b)") }
        print("  deploy it:  cd \(directory) && \(deploy)")
    }
}
