package petrel.runtime;

import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.CognitoIdentity;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JavaType;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedInputStream;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.net.Socket;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Petrel's java17 runtime: loads the handler ({@code package.Class::method} or
 * {@code package.Class}) from /var/task (classes and lib/*.jar) and the layers' /opt/java/lib,
 * then asks the Runtime API for events and answers them, as Lambda's Java runtime does:
 * {@link RequestHandler} with its input mapped from JSON to the handler's type (Jackson),
 * {@link RequestStreamHandler} with the raw bytes, or a public method taking (I[, Context]) or
 * (InputStream, OutputStream[, Context]). Errors go back in Lambda's shape (errorMessage,
 * errorType, stackTrace, cause).
 */
public final class Bootstrap {
    static final ObjectMapper JSON = new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

    public static void main(String[] args) throws Throwable {
        if (args.length > 0 && args[0].equals("--train")) {
            train();
            return;
        }
        String api = System.getenv("AWS_LAMBDA_RUNTIME_API");
        RuntimeClient client = new RuntimeClient(api == null ? "127.0.0.1:9001" : api);
        Handler handler;
        try {
            handler = Handler.load(System.getenv("_HANDLER"), functionLoader());
        } catch (Throwable t) {
            Throwable e = unwrap(t);
            System.err.println("Error loading the handler " + System.getenv("_HANDLER") + ": " + e);
            System.err.flush();
            client.post("/2018-06-01/runtime/init/error", errorBody(e), e.getClass().getName());
            System.exit(1);
            return;
        }
        RuntimeClient.Event event = client.next();
        while (true) {
            InvocationContext ctx = new InvocationContext(event.headers);
            byte[] body;
            String errorType = null;
            try {
                body = handler.invoke(event.body, ctx);
            } catch (Throwable t) {
                Throwable e = unwrap(t);
                e.printStackTrace();
                System.err.flush();
                body = errorBody(e);
                errorType = e.getClass().getName();
            }
            System.out.flush();
            String path = "/2018-06-01/runtime/invocation/" + ctx.requestId + (errorType == null ? "/response" : "/error");
            event = client.answerAndNext(path, body, errorType);
        }
    }

    /** The function's class loader: its classes and jars, then its layers' jars. */
    static ClassLoader functionLoader() throws IOException {
        List<URL> urls = new ArrayList<>();
        urls.add(new File("/var/task/").toURI().toURL());
        for (String dir : new String[] {"/var/task/lib", "/opt/java/lib"}) {
            File[] jars = new File(dir).listFiles((d, n) -> n.endsWith(".jar"));
            if (jars == null) continue;
            Arrays.sort(jars);
            for (File j : jars) urls.add(j.toURI().toURL());
        }
        return new URLClassLoader(urls.toArray(new URL[0]), Bootstrap.class.getClassLoader());
    }

    static Throwable unwrap(Throwable t) {
        while ((t instanceof InvocationTargetException || t instanceof ExceptionInInitializerError) && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    static Map<String, Object> errorShape(Throwable e) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("errorMessage", e.getMessage() == null ? e.getClass().getName() : e.getMessage());
        out.put("errorType", e.getClass().getName());
        List<String> trace = new ArrayList<>();
        for (StackTraceElement s : e.getStackTrace()) trace.add(s.toString());
        out.put("stackTrace", trace);
        if (e.getCause() != null && e.getCause() != e) out.put("cause", errorShape(e.getCause()));
        return out;
    }

    static byte[] errorBody(Throwable e) {
        try {
            return JSON.writeValueAsBytes(errorShape(e));
        } catch (IOException io) {
            return ("{\"errorMessage\":\"" + e.getClass().getName() + "\",\"errorType\":\"" + e.getClass().getName() + "\"}")
                .getBytes(StandardCharsets.UTF_8);
        }
    }

    /** Loads what every invocation uses, for the class-data sharing archive (Scripts/setup). */
    static void train() throws Throwable {
        Map<String, Object> m = new HashMap<>();
        m.put("a", List.of(1, "b", true));
        byte[] b = JSON.writeValueAsBytes(m);
        JSON.readValue(b, Map.class);
        JSON.readTree(b);
        JSON.readValue("\"s\"".getBytes(StandardCharsets.UTF_8), String.class);
        JSON.writeValueAsBytes(new Sample());
        JSON.readValue("{\"name\":\"x\",\"count\":1}".getBytes(StandardCharsets.UTF_8), Sample.class);
        errorBody(new IllegalStateException("train", new RuntimeException("cause")));
        new InvocationContext(new HashMap<>());
        Handler.load("petrel.runtime.Bootstrap$Sample::handle", Bootstrap.class.getClassLoader());
        Handler.load("petrel.runtime.Bootstrap$SampleHandler", Bootstrap.class.getClassLoader()).invoke(b, new InvocationContext(new HashMap<>()));
        new RuntimeClient("127.0.0.1:9");
    }

    /** For training only. */
    public static final class Sample {
        public String name = "n";
        public int count;
        public Map<String, Object> handle(Map<String, Object> in, Context c) { return in; }
    }

    /** For training only. */
    public static final class SampleHandler implements RequestHandler<Map<String, Object>, Map<String, Object>> {
        public Map<String, Object> handleRequest(Map<String, Object> in, Context c) { return in; }
    }

    // ------------------------------------------------------------------ the handler

    /** How one handler is called. */
    abstract static class Handler {
        abstract byte[] invoke(byte[] input, Context ctx) throws Throwable;

        static Handler load(String spec, ClassLoader loader) throws Exception {
            if (spec == null || spec.isEmpty()) throw new IllegalArgumentException("the function has no handler (package.Class::method)");
            String className = spec;
            String methodName = null;
            int sep = spec.indexOf("::");
            if (sep >= 0) {
                className = spec.substring(0, sep);
                methodName = spec.substring(sep + 2);
            }
            Class<?> cls;
            try {
                cls = Class.forName(className, true, loader);
            } catch (ClassNotFoundException e) {
                throw new ClassNotFoundException("Class not found: " + className, e);
            }
            if (methodName == null || methodName.equals("handleRequest")) {
                if (RequestStreamHandler.class.isAssignableFrom(cls)) {
                    RequestStreamHandler h = (RequestStreamHandler) newInstance(cls);
                    return new Handler() {
                        byte[] invoke(byte[] input, Context ctx) throws Throwable {
                            ByteArrayOutputStream out = new ByteArrayOutputStream();
                            h.handleRequest(new ByteArrayInputStream(input), out, ctx);
                            return out.toByteArray();
                        }
                    };
                }
                if (RequestHandler.class.isAssignableFrom(cls)) {
                    @SuppressWarnings("unchecked")
                    RequestHandler<Object, Object> h = (RequestHandler<Object, Object>) newInstance(cls);
                    JavaType in = JSON.getTypeFactory().constructType(inputType(cls));
                    return new Handler() {
                        byte[] invoke(byte[] input, Context ctx) throws Throwable {
                            return JSON.writeValueAsBytes(h.handleRequest(read(input, in), ctx));
                        }
                    };
                }
                if (methodName == null) {
                    throw new NoSuchMethodException(
                        "Class " + className + " does not implement RequestHandler or RequestStreamHandler; name a method: " + className + "::method");
                }
            }
            Method chosen = null;
            for (Method m : cls.getMethods()) {
                if (!m.getName().equals(methodName) || m.isBridge()) continue;
                if (chosen == null || m.getParameterCount() > chosen.getParameterCount()) chosen = m;
            }
            if (chosen == null) throw new NoSuchMethodException("No public method named " + methodName + " in class " + className);
            Method method = chosen;
            Object target = Modifier.isStatic(method.getModifiers()) ? null : newInstance(cls);
            Class<?>[] p = method.getParameterTypes();
            boolean stream = p.length >= 2 && p[0] == InputStream.class && p[1] == OutputStream.class;
            if (stream) {
                return new Handler() {
                    byte[] invoke(byte[] input, Context ctx) throws Throwable {
                        ByteArrayOutputStream out = new ByteArrayOutputStream();
                        Object[] a = p.length == 3 ? new Object[] {new ByteArrayInputStream(input), out, ctx}
                                                   : new Object[] {new ByteArrayInputStream(input), out};
                        method.invoke(target, a);
                        return out.toByteArray();
                    }
                };
            }
            if (p.length > 2 || (p.length == 2 && p[1] != Context.class)) {
                throw new NoSuchMethodException(
                    "The handler " + spec + " must take (input[, Context]) or (InputStream, OutputStream[, Context])");
            }
            JavaType in = p.length == 0 ? null : JSON.getTypeFactory().constructType(method.getGenericParameterTypes()[0]);
            boolean isVoid = method.getReturnType() == void.class;
            return new Handler() {
                byte[] invoke(byte[] input, Context ctx) throws Throwable {
                    Object[] a = p.length == 0 ? new Object[0] : p.length == 1 ? new Object[] {read(input, in)} : new Object[] {read(input, in), ctx};
                    Object r = method.invoke(target, a);
                    return isVoid ? "null".getBytes(StandardCharsets.UTF_8) : JSON.writeValueAsBytes(r);
                }
            };
        }

        static Object read(byte[] input, JavaType type) throws IOException {
            if (type.getRawClass() == InputStream.class) return new ByteArrayInputStream(input);
            if (type.getRawClass() == byte[].class) return input;
            return JSON.readValue(input, type);
        }

        static Object newInstance(Class<?> cls) throws Exception {
            return cls.getDeclaredConstructor().newInstance();
        }

        /** The I of RequestHandler<I, O>, found through the class's superclasses and interfaces. */
        static Type inputType(Class<?> cls) {
            Map<TypeVariable<?>, Type> bound = new HashMap<>();
            for (Class<?> c = cls; c != null; c = c.getSuperclass()) {
                for (Type t : withSuper(c)) {
                    if (!(t instanceof ParameterizedType)) continue;
                    ParameterizedType pt = (ParameterizedType) t;
                    Class<?> raw = (Class<?>) pt.getRawType();
                    TypeVariable<?>[] vars = raw.getTypeParameters();
                    for (int i = 0; i < vars.length; i++) {
                        Type arg = pt.getActualTypeArguments()[i];
                        bound.put(vars[i], arg instanceof TypeVariable ? bound.getOrDefault(arg, Object.class) : arg);
                    }
                    if (raw == RequestHandler.class) {
                        Type in = pt.getActualTypeArguments()[0];
                        return in instanceof TypeVariable ? bound.getOrDefault(in, Object.class) : in;
                    }
                }
            }
            return Object.class;
        }

        static List<Type> withSuper(Class<?> c) {
            List<Type> out = new ArrayList<>(Arrays.asList(c.getGenericInterfaces()));
            if (c.getGenericSuperclass() != null) out.add(c.getGenericSuperclass());
            return out;
        }
    }

    // ------------------------------------------------------------------ the context

    static final class InvocationContext implements Context, LambdaLogger {
        final String requestId;
        final long deadlineMs;
        final String arn;
        final CognitoIdentity identity;
        final ClientContext client;

        InvocationContext(Map<String, String> h) {
            requestId = h.getOrDefault("lambda-runtime-aws-request-id", "");
            long d;
            try {
                d = Long.parseLong(h.getOrDefault("lambda-runtime-deadline-ms", "0"));
            } catch (NumberFormatException e) {
                d = 0;
            }
            deadlineMs = d;
            arn = h.getOrDefault("lambda-runtime-invoked-function-arn", "");
            identity = identity(h.get("lambda-runtime-cognito-identity"));
            client = clientContext(h.get("lambda-runtime-client-context"));
        }

        public String getAwsRequestId() { return requestId; }
        public String getLogGroupName() { return System.getenv("AWS_LAMBDA_LOG_GROUP_NAME"); }
        public String getLogStreamName() { return System.getenv("AWS_LAMBDA_LOG_STREAM_NAME"); }
        public String getFunctionName() { return System.getenv("AWS_LAMBDA_FUNCTION_NAME"); }
        public String getFunctionVersion() { return System.getenv("AWS_LAMBDA_FUNCTION_VERSION"); }
        public String getInvokedFunctionArn() { return arn; }
        public CognitoIdentity getIdentity() { return identity; }
        public ClientContext getClientContext() { return client; }
        public int getRemainingTimeInMillis() { return (int) Math.max(0, deadlineMs - System.currentTimeMillis()); }
        public int getMemoryLimitInMB() {
            try {
                return Integer.parseInt(System.getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"));
            } catch (NumberFormatException e) {
                return 0;
            }
        }
        public LambdaLogger getLogger() { return this; }

        public void log(String message) {
            System.out.print(message);
            System.out.flush();
        }

        public void log(byte[] message) {
            System.out.write(message, 0, message.length);
            System.out.flush();
        }

        static CognitoIdentity identity(String json) {
            if (json == null || json.isEmpty()) return null;
            try {
                JsonNode n = JSON.readTree(json);
                String id = n.path("cognitoIdentityId").asText(null);
                String pool = n.path("cognitoIdentityPoolId").asText(null);
                return new CognitoIdentity() {
                    public String getIdentityId() { return id; }
                    public String getIdentityPoolId() { return pool; }
                };
            } catch (IOException e) {
                return null;
            }
        }

        static ClientContext clientContext(String json) {
            if (json == null || json.isEmpty()) return null;
            try {
                JsonNode n = JSON.readTree(json);
                Map<String, String> custom = strings(n.path("custom"));
                Map<String, String> env = strings(n.path("env"));
                JsonNode c = n.path("client");
                ClientContext.Client cl = new ClientContext.Client() {
                    public String getInstallationId() { return c.path("installation_id").asText(null); }
                    public String getAppTitle() { return c.path("app_title").asText(null); }
                    public String getAppVersionName() { return c.path("app_version_name").asText(null); }
                    public String getAppVersionCode() { return c.path("app_version_code").asText(null); }
                    public String getAppPackageName() { return c.path("app_package_name").asText(null); }
                };
                return new ClientContext() {
                    public Client getClient() { return cl; }
                    public Map<String, String> getCustom() { return custom; }
                    public Map<String, String> getEnvironment() { return env; }
                };
            } catch (IOException e) {
                return null;
            }
        }

        static Map<String, String> strings(JsonNode n) {
            Map<String, String> out = new HashMap<>();
            n.fields().forEachRemaining(e -> out.put(e.getKey(), e.getValue().asText()));
            return out;
        }
    }

    // ------------------------------------------------------------------ the Runtime API

    /** HTTP/1.1 on one kept-alive connection; the answer and the next request go out in one write. */
    static final class RuntimeClient {
        final String host;
        final int port;
        Socket socket;
        InputStream in;
        OutputStream out;

        static final class Event {
            final Map<String, String> headers;
            final byte[] body;
            Event(Map<String, String> headers, byte[] body) {
                this.headers = headers;
                this.body = body;
            }
        }

        RuntimeClient(String address) {
            int colon = address.lastIndexOf(':');
            host = address.substring(0, colon);
            port = Integer.parseInt(address.substring(colon + 1));
        }

        void connect() throws IOException {
            if (socket != null) return;
            socket = new Socket(host, port);
            socket.setTcpNoDelay(true);
            in = new BufferedInputStream(socket.getInputStream(), 65536);
            out = socket.getOutputStream();
        }

        static byte[] request(String method, String path, byte[] body, String errorType) {
            StringBuilder h = new StringBuilder();
            h.append(method).append(' ').append(path).append(" HTTP/1.1\r\nHost: runtime\r\n");
            if (body != null) {
                h.append("Content-Type: application/json\r\nContent-Length: ").append(body.length).append("\r\n");
                if (errorType != null) h.append("Lambda-Runtime-Function-Error-Type: ").append(errorType.replaceAll("[\r\n]", "")).append("\r\n");
            }
            h.append("\r\n");
            byte[] head = h.toString().getBytes(StandardCharsets.UTF_8);
            if (body == null) return head;
            byte[] all = Arrays.copyOf(head, head.length + body.length);
            System.arraycopy(body, 0, all, head.length, body.length);
            return all;
        }

        Event next() throws IOException {
            connect();
            out.write(request("GET", "/2018-06-01/runtime/invocation/next", null, null));
            out.flush();
            return read();
        }

        void post(String path, byte[] body, String errorType) throws IOException {
            connect();
            out.write(request("POST", path, body, errorType));
            out.flush();
            read();
        }

        Event answerAndNext(String path, byte[] body, String errorType) throws IOException {
            connect();
            byte[] a = request("POST", path, body, errorType);
            byte[] b = request("GET", "/2018-06-01/runtime/invocation/next", null, null);
            byte[] both = Arrays.copyOf(a, a.length + b.length);
            System.arraycopy(b, 0, both, a.length, b.length);
            out.write(both);
            out.flush();
            read();
            return read();
        }

        String line() throws IOException {
            ByteArrayOutputStream b = new ByteArrayOutputStream(128);
            int c;
            while ((c = in.read()) != -1) {
                if (c == '\n') break;
                if (c != '\r') b.write(c);
            }
            if (c == -1 && b.size() == 0) throw new IOException("the Runtime API closed the connection");
            return b.toString(StandardCharsets.UTF_8);
        }

        Event read() throws IOException {
            String status = line();
            Map<String, String> headers = new HashMap<>();
            for (String l = line(); !l.isEmpty(); l = line()) {
                int colon = l.indexOf(':');
                if (colon > 0) headers.put(l.substring(0, colon).trim().toLowerCase(), l.substring(colon + 1).trim());
            }
            byte[] body;
            if ("chunked".equalsIgnoreCase(headers.get("transfer-encoding"))) {
                ByteArrayOutputStream b = new ByteArrayOutputStream();
                while (true) {
                    int n = Integer.parseInt(line().split(";")[0].trim(), 16);
                    if (n == 0) {
                        while (!line().isEmpty()) { }
                        break;
                    }
                    b.write(in.readNBytes(n));
                    line();
                }
                body = b.toByteArray();
            } else {
                body = in.readNBytes(Integer.parseInt(headers.getOrDefault("content-length", "0")));
            }
            if (!status.contains(" 2")) {
                throw new IOException("the Runtime API answered " + status + ": " + new String(body, StandardCharsets.UTF_8));
            }
            return new Event(headers, body);
        }
    }
}
