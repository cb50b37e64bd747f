"""The java17 runtime (Debian's OpenJDK 17) through the Lambda API: RequestHandler with its
input mapped from JSON (a Map and POJOs), RequestStreamHandler, `package.Class::method`
handlers, the Context's fields and LambdaLogger, errors and init errors in the shape of
Lambda's Java runtime, timeouts, out of memory, classes and lib/*.jar from the ZIP and jars
from a layer. The handlers are compiled here with Debian's javac against the runtime's own
interfaces (com.amazonaws.services.lambda.runtime, written by Petrel)."""

import glob
import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest
import zipfile

from harness import ROLE, DaemonTestCase, log_tail, payload_json

JAVAC = "/usr/lib/jvm/java-17-openjdk-amd64/bin/javac"
RUNTIME_JAR = "/usr/local/lib/petrel/java/petrel-java.jar"  # Scripts/setup builds it

SOURCES = {
    "example/Hello.java": """\
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import example.lib.Greeter;
import java.util.LinkedHashMap;
import java.util.Map;

public class Hello implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    static int constructed;

    public Hello() { constructed++; }

    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        context.getLogger().log("hello from java " + Runtime.version().feature() + "\\n");
        System.out.println("printed by the handler");
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("got", event);
        out.put("function_name", context.getFunctionName());
        out.put("function_version", context.getFunctionVersion());
        out.put("memory_limit_in_mb", context.getMemoryLimitInMB());
        out.put("aws_request_id", context.getAwsRequestId());
        out.put("invoked_function_arn", context.getInvokedFunctionArn());
        out.put("log_group_name", context.getLogGroupName());
        out.put("remaining", context.getRemainingTimeInMillis());
        out.put("constructed", constructed);
        out.put("greeting", Greeter.greet("java"));
        return out;
    }
}
""",
    "example/Orders.java": """\
package example;

import com.amazonaws.services.lambda.runtime.Context;
import java.util.List;
import java.util.Map;

public class Orders {
    public static class Line { public String sku; public int qty; public int price; }
    public static class Order { public String id; public List<Line> lines; }
    public static class Receipt {
        public String order;
        public int total;
        public String by;
    }

    public Receipt place(Order o, Context c) {
        Receipt r = new Receipt();
        r.order = o.id;
        for (Line l : o.lines) r.total += l.qty * l.price;
        r.by = c.getFunctionName();
        return r;
    }

    public static String shout(String s) { return s.toUpperCase(); }

    public void fail(Map<String, Object> e) {
        throw new IllegalArgumentException("no order " + e.get("id"), new IllegalStateException("out of stock"));
    }

    public String sleepy(Map<String, Object> e) throws Exception {
        Thread.sleep(5000);
        return "late";
    }

    public String hog(Map<String, Object> e) {
        java.util.List<long[]> keep = new java.util.ArrayList<>();
        while (true) keep.add(new long[1 << 20]);
    }
}
""",
    "example/Upper.java": """\
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

public class Upper implements RequestStreamHandler {
    public void handleRequest(InputStream in, OutputStream out, Context context) throws IOException {
        out.write(new String(in.readAllBytes(), "UTF-8").toUpperCase().getBytes("UTF-8"));
    }
}
""",
    "example/Broken.java": """\
package example;

public class Broken {
    static { if (true) throw new IllegalStateException("cannot start"); }
    public String handle(String s) { return s; }
}
""",
}

LIB = {"example/lib/Greeter.java": "package example.lib;\n\npublic class Greeter {\n"
                                   "    public static String greet(String n) { return \"hello \" + n; }\n}\n"}
LAYER = {"example/layer/Word.java": "package example.layer;\n\npublic class Word {\n"
                                    "    public static final String WORD = \"petrel\";\n}\n"}
WITH_LAYER = {"example/FromLayer.java": "package example;\n\npublic class FromLayer {\n"
                                        "    public String handle(java.util.Map<String, Object> e) { return example.layer.Word.WORD; }\n}\n"}


def compile_java(sources, classpath, out):
    src = tempfile.mkdtemp(prefix="petrel-java-src-")
    try:
        files = []
        for path, text in sources.items():
            full = os.path.join(src, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)
            files.append(full)
        subprocess.run([JAVAC, "--release", "17", "-cp", ":".join(classpath), "-d", out] + files, check=True,
                       capture_output=True, text=True)
    finally:
        shutil.rmtree(src)


def jar_bytes(directory):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for full in sorted(glob.glob(os.path.join(directory, "**", "*.class"), recursive=True)):
            z.write(full, os.path.relpath(full, directory))
    return buf.getvalue()


class JavaRuntime(DaemonTestCase):
    @classmethod
    def ready(cls):
        cls.lam = cls.daemon.client()
        work = tempfile.mkdtemp(prefix="petrel-java-")
        try:
            lib, classes, layer, layered = (os.path.join(work, d) for d in ("lib", "classes", "layer", "layered"))
            compile_java(LIB, [], lib)
            compile_java(LAYER, [], layer)
            jackson = ["/usr/share/java/jackson-databind.jar", "/usr/share/java/jackson-core.jar"]
            compile_java(SOURCES, [RUNTIME_JAR, lib] + jackson, classes)
            compile_java(WITH_LAYER, [layer], layered)
            # The ZIP as Lambda takes it: classes at the top, dependencies in lib/*.jar.
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for full in sorted(glob.glob(os.path.join(classes, "**", "*.class"), recursive=True)):
                    z.write(full, os.path.relpath(full, classes))
                z.writestr("lib/greeter.jar", jar_bytes(lib))
            cls.zip = buf.getvalue()
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("java/lib/word.jar", jar_bytes(layer))
            cls.layer_zip = buf.getvalue()
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for full in glob.glob(os.path.join(layered, "**", "*.class"), recursive=True):
                    z.write(full, os.path.relpath(full, layered))
            cls.layered_zip = buf.getvalue()
        finally:
            shutil.rmtree(work)
        cls.create("java", "example.Hello", Timeout=5)

    @classmethod
    def create(cls, name, handler, code=None, **kw):
        kw.setdefault("MemorySize", 512)
        cls.lam.create_function(FunctionName=name, Runtime="java17", Role=ROLE, Handler=handler,
                                Code={"ZipFile": code or cls.zip}, **kw)

    def invoke(self, name, event=None, raw=None, **kw):
        payload = raw if raw is not None else json.dumps(event if event is not None else {})
        return self.lam.invoke(FunctionName=name, Payload=payload, LogType="Tail", **kw)

    def test_request_handler_context_logger_and_lib_jars(self):
        r = self.invoke("java", {"id": 7, "tags": ["a"]})
        self.assertNotIn("FunctionError", r, payload_json(r) if "FunctionError" in r else None)
        out = payload_json(r)
        self.assertEqual(out["got"], {"id": 7, "tags": ["a"]})
        self.assertEqual((out["function_name"], out["function_version"], out["memory_limit_in_mb"]), ("java", "$LATEST", 512))
        self.assertEqual(out["aws_request_id"], r["ResponseMetadata"]["RequestId"])
        self.assertEqual(out["invoked_function_arn"], "arn:aws:lambda:us-east-1:000000000000:function:java")
        self.assertEqual(out["log_group_name"], "/aws/lambda/java")
        self.assertTrue(0 < out["remaining"] <= 5000, out["remaining"])
        self.assertEqual(out["greeting"], "hello java")  # from lib/greeter.jar
        tail = log_tail(r)
        self.assertIn("hello from java 17", tail)
        self.assertIn("printed by the handler", tail)
        self.assertIn("REPORT RequestId: " + out["aws_request_id"], tail)
        # Warm: the same instance (constructed once) answers again.
        again = payload_json(self.invoke("java", {"id": 8}))
        self.assertEqual((again["got"], again["constructed"]), ({"id": 8}, 1))

    def test_pojo_and_static_method_handlers(self):
        self.create("java-orders", "example.Orders::place")
        order = {"id": "A1", "lines": [{"sku": "x", "qty": 2, "price": 5}, {"sku": "y", "qty": 1, "price": 7}], "extra": True}
        self.assertEqual(payload_json(self.invoke("java-orders", order)), {"order": "A1", "total": 17, "by": "java-orders"})
        self.create("java-shout", "example.Orders::shout")
        self.assertEqual(payload_json(self.invoke("java-shout", "hi")), "HI")

    def test_stream_handler(self):
        self.create("java-upper", "example.Upper")
        r = self.invoke("java-upper", raw=b'{"word": "petrel"}')
        self.assertEqual(r["Payload"].read(), b'{"WORD": "PETREL"}')

    def test_errors_in_lambdas_shape(self):
        self.create("java-fail", "example.Orders::fail")
        r = self.invoke("java-fail", {"id": 9})
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        self.assertEqual((err["errorType"], err["errorMessage"]), ("java.lang.IllegalArgumentException", "no order 9"))
        self.assertTrue(any(line.startswith("example.Orders.fail(") for line in err["stackTrace"]), err["stackTrace"])
        self.assertEqual((err["cause"]["errorType"], err["cause"]["errorMessage"]), ("java.lang.IllegalStateException", "out of stock"))
        self.assertIn("java.lang.IllegalArgumentException: no order 9", log_tail(r))
        # An input that does not map to the handler's type is the function's error too.
        r = self.invoke("java-fail", raw=b'"not an object"')
        self.assertEqual(r["FunctionError"], "Unhandled")

        cases = [
            ("java-noclass", "example.Missing::handle", "java.lang.ClassNotFoundException", "Class not found: example.Missing"),
            ("java-nomethod", "example.Orders::nope", "java.lang.NoSuchMethodException", "No public method named nope"),
            ("java-noiface", "example.Orders", "java.lang.NoSuchMethodException", "does not implement RequestHandler"),
            ("java-static-init", "example.Broken::handle", "java.lang.IllegalStateException", "cannot start"),
        ]
        for name, handler, error_type, words in cases:
            self.create(name, handler)
            r = self.invoke(name)
            self.assertEqual(r.get("FunctionError"), "Unhandled", name)
            err = payload_json(r)
            self.assertEqual(err["errorType"], error_type, (name, err))
            self.assertIn(words, err["errorMessage"], name)

    def test_timeout_and_out_of_memory(self):
        self.create("java-slow", "example.Orders::sleepy", Timeout=1)
        r = self.invoke("java-slow")
        self.assertEqual(r["FunctionError"], "Unhandled")
        self.assertIn("Task timed out after 1", payload_json(r)["errorMessage"])
        self.create("java-hog", "example.Orders::hog", MemorySize=256, Timeout=20)
        r = self.invoke("java-hog")
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        # The heap is sized below the memory limit: the JVM's own OutOfMemoryError, not a kill.
        self.assertEqual(err["errorType"], "java.lang.OutOfMemoryError", err)

    def test_a_layers_jars(self):
        layer = self.lam.publish_layer_version(LayerName="java-words", CompatibleRuntimes=["java17"],
                                               Content={"ZipFile": self.layer_zip})
        self.create("java-layer", "example.FromLayer::handle", code=self.layered_zip, Layers=[layer["LayerVersionArn"]])
        r = self.invoke("java-layer")
        self.assertNotIn("FunctionError", r, payload_json(r) if "FunctionError" in r else None)
        self.assertEqual(payload_json(r), "petrel")


if __name__ == "__main__":
    unittest.main()
