"""The ruby3.1 runtime (Debian's Ruby) through the Lambda API: handlers `file.method` and
`file.Module::Class.method` called with `event:` and `context:`, the context's fields, logs,
errors and init errors in the shapes of Lambda's Ruby runtime, timeouts, gems vendored in
the ZIP and libraries from a layer."""

import json
import unittest

from harness import ROLE, DaemonTestCase, log_tail, make_zip, payload_json

APP = """\
require 'json'

def lambda_handler(event:, context:)
  puts "hello from ruby #{RUBY_VERSION}"
  {
    'got' => event,
    'function_name' => context.function_name,
    'function_version' => context.function_version,
    'memory_limit_in_mb' => context.memory_limit_in_mb,
    'aws_request_id' => context.aws_request_id,
    'invoked_function_arn' => context.invoked_function_arn,
    'log_group_name' => context.log_group_name,
    'remaining' => context.get_remaining_time_in_millis,
  }
end

module Shop
  class Orders
    def self.handle(event:, context:)
      { 'order' => event['id'], 'by' => name }
    end
  end
end

def fail_here(event:, context:)
  raise ArgumentError, "no order #{event['id']}"
end

def sleepy(event:, context:)
  sleep 5
  'late'
end
"""

GEMSPEC = """\
Gem::Specification.new do |s|
  s.name = 'greeter'
  s.version = '1.0.0'
  s.summary = 'greets'
  s.authors = ['petrel']
  s.files = ['lib/greeter.rb']
  s.require_paths = ['lib']
end
"""

WITH_GEMS = """\
require 'greeter'
require 'shared_words'

def handler(event:, context:)
  { 'greeting' => Greeter.greet(event['name']), 'word' => SharedWords::WORD }
end
"""


class RubyRuntime(DaemonTestCase):
    @classmethod
    def ready(cls):
        cls.lam = cls.daemon.client()
        cls.lam.create_function(FunctionName="rb", Runtime="ruby3.1", Role=ROLE, Handler="lambda_function.lambda_handler",
                                Code={"ZipFile": make_zip({"lambda_function.rb": APP})}, Timeout=2)

    def invoke(self, name, event=None, **kw):
        return self.lam.invoke(FunctionName=name, Payload=json.dumps(event if event is not None else {}), LogType="Tail", **kw)

    def test_handler_event_context_and_log(self):
        r = self.invoke("rb", {"id": 7})
        self.assertNotIn("FunctionError", r)
        out = payload_json(r)
        self.assertEqual(out["got"], {"id": 7})
        self.assertEqual((out["function_name"], out["function_version"], out["memory_limit_in_mb"]), ("rb", "$LATEST", "128"))
        self.assertEqual(out["aws_request_id"], r["ResponseMetadata"]["RequestId"])
        self.assertEqual(out["invoked_function_arn"], "arn:aws:lambda:us-east-1:000000000000:function:rb")
        self.assertEqual(out["log_group_name"], "/aws/lambda/rb")
        self.assertTrue(0 < out["remaining"] <= 2000, out["remaining"])
        tail = log_tail(r)
        self.assertIn("hello from ruby 3.1", tail)
        self.assertIn("REPORT RequestId: " + out["aws_request_id"], tail)
        # Warm: the same instance answers again.
        self.assertEqual(payload_json(self.invoke("rb", {"id": 8}))["got"], {"id": 8})

    def test_module_class_method_handler(self):
        self.lam.create_function(FunctionName="rb-class", Runtime="ruby3.1", Role=ROLE,
                                 Handler="lambda_function.Shop::Orders.handle",
                                 Code={"ZipFile": make_zip({"lambda_function.rb": APP})})
        self.assertEqual(payload_json(self.invoke("rb-class", {"id": "A1"})), {"order": "A1", "by": "Shop::Orders"})

    def test_errors_in_lambdas_shapes(self):
        self.lam.create_function(FunctionName="rb-fail", Runtime="ruby3.1", Role=ROLE, Handler="lambda_function.fail_here",
                                 Code={"ZipFile": make_zip({"lambda_function.rb": APP})})
        r = self.invoke("rb-fail", {"id": 9})
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        self.assertEqual((err["errorType"], err["errorMessage"]), ("Function<ArgumentError>", "no order 9"))
        self.assertTrue(any("lambda_function.rb" in line for line in err["stackTrace"]), err["stackTrace"])
        self.assertFalse(any(line.startswith("/var/runtime/") for line in err["stackTrace"]), err["stackTrace"])
        self.assertIn("Function<ArgumentError>", log_tail(r))

        cases = [
            ("rb-syntax", {"lambda_function.rb": "def lambda_handler(event:, context:\n"}, "lambda_function.lambda_handler",
             "Init<SyntaxError>"),
            ("rb-nofile", {"lambda_function.rb": APP}, "other.lambda_handler", "Init<LoadError>"),
            ("rb-nomethod", {"lambda_function.rb": APP}, "lambda_function.nope", "Init<NameError>"),
            ("rb-noclass", {"lambda_function.rb": APP}, "lambda_function.Shop::Nope.handle", "Init<NameError>"),
            ("rb-raises", {"lambda_function.rb": "raise 'at load'\n"}, "lambda_function.x", "Init<RuntimeError>"),
        ]
        for name, files, handler, error_type in cases:
            self.lam.create_function(FunctionName=name, Runtime="ruby3.1", Role=ROLE, Handler=handler,
                                     Code={"ZipFile": make_zip(files)})
            r = self.invoke(name)
            self.assertEqual(r.get("FunctionError"), "Unhandled", name)
            self.assertEqual(payload_json(r)["errorType"], error_type, name)

    def test_timeout(self):
        self.lam.create_function(FunctionName="rb-slow", Runtime="ruby3.1", Role=ROLE, Handler="lambda_function.sleepy",
                                 Code={"ZipFile": make_zip({"lambda_function.rb": APP})}, Timeout=1)
        r = self.invoke("rb-slow")
        self.assertEqual(r["FunctionError"], "Unhandled")
        self.assertIn("Task timed out after 1", payload_json(r)["errorMessage"])

    def test_vendored_gems_and_a_layer(self):
        base = "vendor/bundle/ruby/3.1.0/"
        files = {
            "app.rb": WITH_GEMS,
            base + "specifications/greeter-1.0.0.gemspec": GEMSPEC,
            base + "gems/greeter-1.0.0/lib/greeter.rb": "module Greeter\n  def self.greet(n) = \"hello #{n}\"\nend\n",
        }
        layer = self.lam.publish_layer_version(
            LayerName="ruby-words", CompatibleRuntimes=["ruby3.1"],
            Content={"ZipFile": make_zip({"ruby/lib/shared_words.rb": "module SharedWords\n  WORD = 'petrel'\nend\n"})})
        self.lam.create_function(FunctionName="rb-gems", Runtime="ruby3.1", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": make_zip(files)}, Layers=[layer["LayerVersionArn"]])
        r = self.invoke("rb-gems", {"name": "ruby"})
        self.assertNotIn("FunctionError", r, payload_json(r) if "FunctionError" in r else None)
        self.assertEqual(payload_json(r), {"greeting": "hello ruby", "word": "petrel"})


if __name__ == "__main__":
    unittest.main()
