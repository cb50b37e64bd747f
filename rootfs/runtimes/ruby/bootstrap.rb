# Petrel's ruby3.1 runtime (Debian's Ruby): pulls invocations from the Runtime API, calls
# the handler _HANDLER names (`file.method`, or `file.Module::Class.method`) with the
# keywords `event:` and `context:`, as AWS Lambda's Ruby runtime does, and posts the result
# or the error in that runtime's shapes (`Function<Class>`, `Init<Class>`, `stackTrace`).

require 'json'
require 'socket'

module PetrelRuntime
  BASE = '/2018-06-01/runtime'
  NEXT = "#{BASE}/invocation/next"
  API = ENV.fetch('AWS_LAMBDA_RUNTIME_API', '127.0.0.1:9001')

  # A minimal HTTP/1.1 client on one keep-alive connection: Petrel's abstract socket when
  # PETREL_RUNTIME_API_SOCKET names one, else AWS_LAMBDA_RUNTIME_API over TCP.
  class Client
    def initialize(address, unix)
      @host, @port = address.split(':', 2)
      @unix = unix.start_with?('@') && unix.length > 1 ? "\0#{unix[1..]}".ljust(108, "\0") : nil
      @sock = nil
      @buf = +''
    end

    def request(method, path, body = '', headers = {})
      retrying { exchange([[method, path, body, headers]]).last }
    end

    # POSTs a result and asks for the next invocation in the same write (HTTP/1.1
    # pipelining): one wake-up for the 202 and the event together. Answers `next`'s answer.
    def post_then_next(path, body, headers)
      retrying { exchange([['POST', path, body, headers], ['GET', NEXT, '', {}]]).last }
    end

    private

    def retrying
      2.times do |attempt|
        connect if @sock.nil?
        begin
          return yield
        rescue SystemCallError, IOError, EOFError
          @sock&.close rescue nil
          @sock = nil
          raise if attempt == 1
        end
      end
    end

    def connect
      @buf = +''
      if @unix
        begin
          @sock = Socket.new(:UNIX, :STREAM)
          @sock.connect(Socket.pack_sockaddr_un(@unix))
          return
        rescue SystemCallError
          @sock&.close
          @unix = nil
        end
      end
      @sock = TCPSocket.new(@host, Integer(@port))
      @sock.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1)
    end

    def exchange(requests)
      out = String.new(encoding: Encoding::BINARY)
      requests.each do |method, path, body, headers|
        body = body.b
        head = +"#{method} #{path} HTTP/1.1\r\nHost: #{API}\r\nContent-Length: #{body.bytesize}\r\n"
        headers.each { |k, v| head << "#{k}: #{v}\r\n" }
        out << head.b << "\r\n".b << body
      end
      @sock.write(out)
      answers = []
      requests.each_index do |n|
        if @sock.nil?
          # The server closed after an answer: ask again for what is left.
          connect
          return answers + exchange(requests[n..])
        end
        answers << read_answer
      end
      answers
    end

    def read_answer
      fill until (i = @buf.index("\r\n\r\n"))
      lines = @buf[0, i].split("\r\n")
      @buf = @buf[(i + 4)..]
      status = lines.shift.split(' ', 3)[1].to_i
      hdrs = {}
      lines.each do |l|
        k, v = l.split(':', 2)
        hdrs[k.strip.downcase] = v.to_s.strip
      end
      length = hdrs.fetch('content-length', '0').to_i
      fill while @buf.bytesize < length
      payload = @buf.byteslice(0, length)
      @buf = @buf.byteslice(length..) || +''
      if hdrs['connection'].to_s.downcase == 'close'
        @sock.close
        @sock = nil
      end
      [status, hdrs, payload]
    end

    def fill
      chunk = @sock.readpartial(65_536)
      @buf << chunk.b
    end
  end

  # What a Ruby handler's `context:` is on Lambda.
  class LambdaContext
    attr_reader :aws_request_id, :invoked_function_arn, :log_group_name, :log_stream_name, :function_name,
                :function_version, :memory_limit_in_mb, :deadline_ms, :identity, :client_context

    def initialize(request_id, headers)
      @aws_request_id = request_id
      @invoked_function_arn = headers['lambda-runtime-invoked-function-arn']
      @log_group_name = ENV['AWS_LAMBDA_LOG_GROUP_NAME']
      @log_stream_name = ENV['AWS_LAMBDA_LOG_STREAM_NAME']
      @function_name = ENV['AWS_LAMBDA_FUNCTION_NAME']
      @function_version = ENV['AWS_LAMBDA_FUNCTION_VERSION']
      @memory_limit_in_mb = ENV['AWS_LAMBDA_FUNCTION_MEMORY_SIZE']
      @deadline_ms = headers['lambda-runtime-deadline-ms'].to_i
      ci = headers['lambda-runtime-cognito-identity']
      cc = headers['lambda-runtime-client-context']
      @identity = ci ? JSON.parse(ci) : nil
      @client_context = cc ? JSON.parse(cc) : nil
    end

    def get_remaining_time_in_millis
      [@deadline_ms - (Process.clock_gettime(Process::CLOCK_REALTIME) * 1000).to_i, 0].max
    end
  end

  def self.error_document(error, classification)
    trace = (error.backtrace || []).reject { |l| l.start_with?('/var/runtime/') }
    { 'errorMessage' => error.message, 'errorType' => "#{classification}<#{error.class}>", 'stackTrace' => trace }
  end

  def self.log_error(doc, request_id = nil)
    $stdout.flush
    $stderr.write("#{request_id ? "#{request_id} " : ''}ERROR #{JSON.generate(doc)}\n")
    $stderr.flush
  end

  def self.init_error(api, doc)
    log_error(doc)
    api.request('POST', "#{BASE}/init/error", JSON.generate(doc),
                'Content-Type' => 'application/json', 'Lambda-Runtime-Function-Error-Type' => doc['errorType'])
    exit!(1)
  end

  # `file.method` or `file.Module::Class.method`: the file is required from /var/task; the
  # method is a top-level method or a method of the module or class.
  def self.load_handler(api)
    handler = ENV.fetch('_HANDLER', '')
    file, _, rest = handler.partition('.')
    if file.empty? || rest.empty?
      init_error(api, { 'errorMessage' => "Bad handler #{handler}: give file.method or file.Module::Class.method",
                        'errorType' => 'Init<ArgumentError>', 'stackTrace' => [] })
    end
    owner_name, _, method_name = rest.rpartition('.')
    task = ENV.fetch('LAMBDA_TASK_ROOT', '/var/task')
    begin
      require File.join(task, file)
    rescue ScriptError, StandardError => e # LoadError and SyntaxError are ScriptErrors
      init_error(api, error_document(e, 'Init'))
    end
    begin
      owner = owner_name.empty? ? Object : Object.const_get(owner_name)
      target = owner_name.empty? ? TOPLEVEL_BINDING.receiver : owner
      fn = target.method(method_name)
    rescue NameError => e
      init_error(api, error_document(e, 'Init'))
    end
    fn
  end

  def self.main
    api = Client.new(API, ENV.fetch('PETREL_RUNTIME_API_SOCKET', ''))
    init_start = format('%.3f', Process.clock_gettime(Process::CLOCK_REALTIME) * 1000)
    # /var/task is on the load path through RUBYLIB (set by petreld, as on Lambda).
    fn = load_handler(api)
    $stdout.flush
    status, headers, body = api.request('GET', NEXT, '', 'Petrel-Init-Start' => init_start)
    loop do
      if status != 200
        sleep 0.01
        status, headers, body = api.request('GET', NEXT)
        next
      end
      rid = headers['lambda-runtime-aws-request-id'].to_s
      # The trace id is not put in ENV['_X_AMZN_TRACE_ID'] as Lambda's runtime does: Ruby's ENV
      # calls setenv(), and glibc keeps every value ever set until the process ends (each
      # invocation has its own id), so a warm instance would grow by every invocation.
      begin
        event = body.empty? ? {} : JSON.parse(body.force_encoding('UTF-8'))
      rescue JSON::ParserError => e
        doc = { 'errorMessage' => "Unable to parse the event: #{e.message}", 'errorType' => 'Runtime.UnmarshalError',
                'stackTrace' => [] }
        status, headers, body = post_error(api, rid, doc)
        next
      end
      begin
        result = fn.call(event: event, context: LambdaContext.new(rid, headers))
        out = JSON.generate(result, quirks_mode: true)
      rescue StandardError, ScriptError, SystemStackError, NoMemoryError => e
        doc = error_document(e, 'Function')
        log_error(doc, rid)
        status, headers, body = post_error(api, rid, doc)
        next
      end
      $stdout.flush
      $stderr.flush
      status, headers, body = api.post_then_next("#{BASE}/invocation/#{rid}/response", out, 'Content-Type' => 'application/json')
    end
  end

  def self.post_error(api, rid, doc)
    $stdout.flush
    $stderr.flush
    api.post_then_next("#{BASE}/invocation/#{rid}/error", JSON.generate(doc),
                       'Content-Type' => 'application/json', 'Lambda-Runtime-Function-Error-Type' => doc['errorType'])
  end
end

$stdout.sync = false
PetrelRuntime.main
