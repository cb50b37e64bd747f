"""`petrel deploy --sam`: AWS SAM templates (the SAM documentation's hello-world app, and
an app with a layer, a queue, a topic, a schedule, an alias shifted by a deployment
preference and a URL) applied to a real petreld with the AWS SAM translator, then used
through boto3 and their URLs; a second deploy changes nothing, a changed template changes
only what differs, and what a template drops goes."""

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
import unittest

from harness import REPO, ROLE, Daemon, make_zip, printed, raw_request, signed, wait_for

PETREL = os.environ.get("PETREL", os.path.join(REPO, ".build", "debug", "petrel"))

# The template `sam init` makes (the SAM documentation's "Hello World Example"), unchanged.
HELLO_TEMPLATE = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Description: >
  sam-app

  Sample SAM Template for sam-app

Globals:
  Function:
    Timeout: 3

Resources:
  HelloWorldFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello_world/
      Handler: app.lambda_handler
      Runtime: python3.11
      Architectures:
        - x86_64
      Events:
        HelloWorld:
          Type: Api
          Properties:
            Path: /hello
            Method: get

Outputs:
  HelloWorldApi:
    Description: "API Gateway endpoint URL for Prod stage for Hello World function"
    Value: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.amazonaws.com/Prod/hello/"
  HelloWorldFunction:
    Description: "Hello World Lambda Function ARN"
    Value: !GetAtt HelloWorldFunction.Arn
  HelloWorldFunctionIamRole:
    Description: "Implicit IAM Role created for Hello World function"
    Value: !GetAtt HelloWorldFunctionRole.Arn
"""

HELLO_APP = """\
import json


def lambda_handler(event, context):
    return {
        "statusCode": 200,
        "body": json.dumps({
            "message": "hello world",
        }),
    }
"""

# Events, a layer, an alias with a linear shift, a URL and asynchronous destinations, in
# the forms of the SAM specification's examples.
EVENTS_TEMPLATE = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
Globals:
  Function:
    Timeout: 10
    MemorySize: 256
Resources:
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.11
      Layers:
        - !Ref Shared
      Environment:
        Variables:
          GREETING: !Ref Greeting
          QUEUE_URL: !Ref Jobs
      AutoPublishAlias: live
      DeploymentPreference:
        Type: Linear50PercentEvery1Minute
      FunctionUrlConfig:
        AuthType: NONE
      EventInvokeConfig:
        MaximumRetryAttempts: 0
        DestinationConfig:
          OnSuccess:
            Type: SQS
            Destination: !GetAtt Done.Arn
      Events:
        FromQueue:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 5
        FromTopic:
          Type: SNS
          Properties:
            Topic: !Ref Alerts
        EveryMinute:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
            Input: '{"tick": true}'
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties:
      LayerName: shared
      ContentUri: layer/
      CompatibleRuntimes:
        - python3.11
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 60
  Done:
    Type: AWS::SQS::Queue
  Alerts:
    Type: AWS::SNS::Topic
Outputs:
  WorkerUrl:
    Value: !GetAtt WorkerUrl.FunctionUrl
  JobsUrl:
    Value: !Ref Jobs
"""

WORKER = """\
import json
import os

import helper

CODE = %d


def handler(event, context):
    version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
    for r in event.get("Records", []) if isinstance(event, dict) else []:
        source = r.get("eventSource") or r.get("EventSource")
        body = r.get("body") or (r.get("Sns") or {}).get("Message")
        print("SEEN %%s %%s" %% (source, body))
    return {"statusCode": 200, "body": json.dumps({"code": CODE, "version": version, "helper": helper.VALUE,
                                                    "greeting": os.environ["GREETING"],
                                                    "queue": os.environ["QUEUE_URL"]})}
"""


class SAMDeployTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Strict about roles, as a new installation is: the template's roles must be made for real.
        cls.daemon = Daemon(extra_env={"PETREL_UNKNOWN_ROLES": "refuse"})
        cls.clock = os.path.join(cls.daemon.root, "clock")
        cls.daemon.extra_env["PETREL_TEST_CLOCK_FILE"] = cls.clock
        # Just after a minute boundary, so that a schedule's slots are far from the real clock's edges.
        cls.offset = int((60 - time.time() % 60 + 1) * 1000)
        cls.set_clock(cls.offset)
        cls.daemon.start()
        cls.work = tempfile.mkdtemp(prefix="petrel-sam-", dir="/var/tmp")

    @classmethod
    def set_clock(cls, ms):
        cls.offset = ms
        with open(cls.clock + ".tmp", "w") as f:
            f.write(str(ms))
        os.replace(cls.clock + ".tmp", cls.clock)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)
        cls.daemon.stop_and_check()

    def run(self, result=None):
        with self.daemon.log_on_failure():
            return super().run(result)

    def deploy(self, template, *args, check=True, env=None, background=False):
        cmd = [PETREL, "deploy", "--sam", template, "--endpoint", self.daemon.endpoint] + list(args)
        e = dict(self.daemon.tool_env(), **(env or {}))
        if background:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=e)
        if check and r.returncode != 0:
            self.fail("petrel deploy --sam %s failed (%d):\n%s\n%s" % (template, r.returncode, r.stdout, r.stderr))
        return r

    def app(self, name, files):
        root = os.path.join(self.work, name)
        for rel, text in files.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        return root

    @staticmethod
    def plan(out):
        """{logical id: symbol} of a deploy's plan lines."""
        rows = {}
        for line in out.splitlines():
            parts = line.split()
            if line.startswith("  ") and len(parts) >= 3 and parts[0] in "+~±>-=·":
                rows[parts[1]] = parts[0]
        return rows

    def test_hello_world_from_sam_init(self):
        root = self.app("sam-app", {"template.yaml": HELLO_TEMPLATE, "hello_world/app.py": HELLO_APP,
                                    "hello_world/__init__.py": "", "hello_world/requirements.txt": "requests\n"})
        template = os.path.join(root, "template.yaml")
        lam = self.daemon.client()

        # A dry run shows the plan and changes nothing.
        r = self.deploy(template, "--dry-run")
        plan = self.plan(r.stdout)
        self.assertEqual(plan["HelloWorldFunction"], "+", r.stdout)
        self.assertEqual(plan["ServerlessRestApi"], "·", r.stdout)
        self.assertIn("Plan: 6 to create, 0 to update, 0 to delete, 0 unchanged.", r.stdout)
        self.assertNotIn("sam-app-HelloWorldFunction", [f["FunctionName"] for f in lam.list_functions()["Functions"]])

        r = self.deploy(template)
        self.assertIn("Deployed stack sam-app.", r.stdout)
        fn = lam.get_function(FunctionName="sam-app-HelloWorldFunction")
        self.assertEqual(fn["Configuration"]["Handler"], "app.lambda_handler")
        self.assertEqual(fn["Configuration"]["Timeout"], 3)
        self.assertEqual(fn["Tags"]["petrel:stack"], "sam-app")
        self.assertEqual(fn["Tags"]["lambda:createdBy"], "SAM")
        out = json.loads(lam.invoke(FunctionName="sam-app-HelloWorldFunction")["Payload"].read())
        self.assertEqual(json.loads(out["body"]), {"message": "hello world"})

        # The Api event's route is served at a function URL, which the outputs name.
        url = lam.get_function_url_config(FunctionName="sam-app-HelloWorldFunction")["FunctionUrl"]
        self.assertIn("Output HelloWorldApi = (an API Gateway address; on Petrel the API's routes are served at %s)" % url,
                      r.stdout)
        self.assertIn("Output HelloWorldFunction = arn:aws:lambda:us-east-1:000000000000:function:sam-app-HelloWorldFunction",
                      r.stdout)
        status, _, body = raw_request("GET", url + "hello")
        self.assertEqual((status, json.loads(body)), (200, {"message": "hello world"}))

        # Deploying it again changes nothing.
        before = lam.get_function(FunctionName="sam-app-HelloWorldFunction")["Configuration"]
        r = self.deploy(template)
        self.assertIn("Plan: 0 to create, 0 to update, 0 to delete, 6 unchanged.", r.stdout)
        self.assertIn("No changes.", r.stdout)
        after = lam.get_function(FunctionName="sam-app-HelloWorldFunction")["Configuration"]
        self.assertEqual((before["RevisionId"], before["LastModified"]), (after["RevisionId"], after["LastModified"]))

    def test_events_layer_alias_shift_and_pruning(self):
        files = {"template.yaml": EVENTS_TEMPLATE, "src/app.py": WORKER % 1, "layer/python/helper.py": "VALUE = 'one'\n"}
        root = self.app("events", files)
        template = os.path.join(root, "template.yaml")
        lam, sqs, sns = self.daemon.client(), self.daemon.client("sqs"), self.daemon.client("sns")

        r = self.deploy(template, "--parameter", "Greeting=hi")
        plan = self.plan(r.stdout)
        for rid in ("Worker", "WorkerAliaslive", "WorkerUrl", "Jobs", "Done", "Alerts", "WorkerFromQueue", "WorkerFromTopic",
                    "WorkerEveryMinute", "WorkerEventInvokeConfig"):
            self.assertEqual(plan.get(rid), "+", "%s in\n%s" % (rid, r.stdout))
        name = "events-Worker"
        config = lam.get_function_configuration(FunctionName=name)
        self.assertEqual(config["MemorySize"], 256)
        self.assertEqual(config["Environment"]["Variables"]["GREETING"], "hi")
        jobs = sqs.get_queue_url(QueueName="events-Jobs")["QueueUrl"]
        self.assertEqual(config["Environment"]["Variables"]["QUEUE_URL"], jobs)
        self.assertEqual(sqs.get_queue_attributes(QueueUrl=jobs, AttributeNames=["VisibilityTimeout"])["Attributes"],
                         {"VisibilityTimeout": "60"})
        self.assertEqual([x["Arn"] for x in config["Layers"]], ["arn:aws:lambda:us-east-1:000000000000:layer:shared:1"])
        alias = lam.get_alias(FunctionName=name, Name="live")
        self.assertEqual(alias["FunctionVersion"], "1")

        # The URL (on the alias), the queue, the topic and the schedule all reach version 1.
        url = lam.get_function_url_config(FunctionName=name, Qualifier="live")["FunctionUrl"]
        self.assertIn("Output WorkerUrl = " + url, r.stdout)
        status, _, body = raw_request("GET", url)
        self.assertEqual((status, json.loads(body)),
                         (200, {"code": 1, "version": "1", "helper": "one", "greeting": "hi", "queue": jobs}))
        sqs.send_message(QueueUrl=jobs, MessageBody="job-1")
        wait_for(lambda: "aws:sqs job-1" in printed(self.daemon, name, "SEEN"), timeout=30, what="the queue's message")
        topic = "arn:aws:sns:us-east-1:000000000000:events-Alerts"
        sns.publish(TopicArn=topic, Message="alert-1")
        wait_for(lambda: "aws:sns alert-1" in printed(self.daemon, name, "SEEN"), timeout=30, what="the topic's message")
        status, _, body = signed("GET", self.daemon.endpoint + "/petrel/schedules/events-WorkerEveryMinute",
                                 self.daemon.admin_keys())
        schedule = json.loads(body)
        self.assertEqual((status, schedule["ScheduleExpression"], schedule["Input"]), (200, "rate(1 minute)", '{"tick": true}'))
        self.assertTrue(schedule["FunctionArn"].endswith(":function:events-Worker:live"), schedule)
        done = sqs.get_queue_url(QueueName="events-Done")["QueueUrl"]
        self.set_clock(self.offset + 60_000)
        records = []

        def success_records():
            for m in sqs.receive_message(QueueUrl=done, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
                records.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=done, ReceiptHandle=m["ReceiptHandle"])
            return [x for x in records if x["requestPayload"] == {"tick": True}]
        ticks = wait_for(success_records, timeout=30, what="the schedule's invocation, on its destination")
        self.assertTrue(ticks[0]["requestContext"]["functionArn"].endswith(":function:events-Worker:live"), ticks[0])
        self.assertEqual(json.loads(ticks[0]["responsePayload"]["body"])["version"], "1")

        # Again: nothing changes.
        r = self.deploy(template, "--parameter", "Greeting=hi")
        self.assertIn("No changes.", r.stdout)
        self.assertNotIn("+", "".join(self.plan(r.stdout).values()))

        # New code and a new layer: a new version, which the alias takes in two steps of 50%.
        with open(os.path.join(root, "src", "app.py"), "w") as f:
            f.write(WORKER % 2)
        with open(os.path.join(root, "layer", "python", "helper.py"), "w") as f:
            f.write("VALUE = 'two'\n")
        proc = self.deploy(template, "--parameter", "Greeting=hi", env={"PETREL_SAM_MINUTE_SECONDS": "3"}, background=True)
        try:
            shifted = wait_for(lambda: (lam.get_alias(FunctionName=name, Name="live").get("RoutingConfig") or {}).get(
                "AdditionalVersionWeights"), timeout=60, interval=0.2, what="the alias's weighted step")
            self.assertEqual(shifted, {"2": 0.5})
            self.assertEqual(lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"], "1")
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err)
        plan = self.plan(out)
        self.assertEqual((plan["Worker"], plan["WorkerAliaslive"], plan["Jobs"], plan["WorkerFromQueue"]), ("~", ">", "=", "="), out)
        self.assertIn("50% of live's traffic to version 2 for 1 min", out)
        alias = lam.get_alias(FunctionName=name, Name="live")
        self.assertEqual((alias["FunctionVersion"], alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})), ("2", {}))
        self.assertEqual(lam.get_function_configuration(FunctionName=name)["Layers"][0]["Arn"],
                         "arn:aws:lambda:us-east-1:000000000000:layer:shared:2")
        status, _, body = raw_request("GET", url)
        self.assertEqual(json.loads(body)["code"], 2)
        self.assertEqual(json.loads(body)["helper"], "two")
        self.assertEqual(json.loads(body)["version"], "2")

        # The template drops the events and the topic: their mapping, subscription, schedule,
        # permissions and topic go; the rest stays as it is.
        trimmed = EVENTS_TEMPLATE.split("      Events:\n")[0] + "  Shared:" + EVENTS_TEMPLATE.split("  Shared:")[1]
        trimmed = trimmed.replace("  Alerts:\n    Type: AWS::SNS::Topic\n", "")
        with open(template, "w") as f:
            f.write(trimmed)
        r = self.deploy(template, "--parameter", "Greeting=hi")
        plan = self.plan(r.stdout)
        self.assertEqual((plan["Worker"], plan["Jobs"], plan["WorkerUrl"]), ("=", "=", "="), r.stdout)
        self.assertEqual(plan["Alerts"], "-", r.stdout)
        self.assertEqual(plan["events-WorkerEveryMinute"], "-", r.stdout)
        self.assertIn("Plan: 0 to create, 1 to update, 6 to delete, ", r.stdout)  # the role loses its SQS policy
        self.assertEqual(lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"], [])
        self.assertNotIn(topic, [t["TopicArn"] for t in sns.list_topics()["Topics"]])
        self.assertEqual(signed("GET", self.daemon.endpoint + "/petrel/schedules/events-WorkerEveryMinute",
                                self.daemon.admin_keys())[0], 404)
        policy = json.loads(lam.get_policy(FunctionName=name, Qualifier="live")["Policy"])
        self.assertEqual(sorted(s["Sid"] for s in policy["Statement"]),
                         ["WorkerURLInvokeAllowPublicAccess", "WorkerUrlPublicPermissions"])
        self.assertIn("No changes.", self.deploy(template, "--parameter", "Greeting=hi").stdout)

        # A function the template drops is deleted with what invokes it.
        with open(template, "w") as f:
            f.write(EVENTS_TEMPLATE.split("Resources:\n")[0] + "Resources:\n  Jobs:\n    Type: AWS::SQS::Queue\n"
                    "    Properties:\n      VisibilityTimeout: 60\n")
        r = self.deploy(template, "--parameter", "Greeting=hi")
        self.assertEqual(self.plan(r.stdout).get("Worker"), "-", r.stdout)
        self.assertNotIn(name, [f["FunctionName"] for f in lam.list_functions()["Functions"]])
        self.assertEqual(sqs.get_queue_url(QueueName="events-Jobs")["QueueUrl"], jobs)

    def test_refusals_change_nothing(self):
        lam = self.daemon.client()
        root = self.app("refused", {"src/app.py": HELLO_APP})
        template = os.path.join(root, "template.yaml")

        def attempt(text, *args):
            with open(template, "w") as f:
                f.write(text)
            names = sorted(f["FunctionName"] for f in lam.list_functions()["Functions"])
            r = self.deploy(template, *args, check=False)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertEqual(sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]), names)
            self.assertTrue(r.stderr.startswith("petrel deploy --sam: "), r.stderr)
            self.assertNotIn("Traceback", r.stderr)
            return r.stderr

        head = textwrap.dedent("""\
            Transform: AWS::Serverless-2016-10-31
            Resources:
              Fn:
                Type: AWS::Serverless::Function
                Properties:
                  CodeUri: %s
                  Handler: app.lambda_handler
                  Runtime: python3.11
            """)
        self.assertIn("AWS::DynamoDB::Table (Table)", attempt(head % "src/" + "  Table:\n    Type: AWS::DynamoDB::Table\n"))
        self.assertIn("does not exist", attempt(head % "nowhere/"))
        self.assertIn("does not fetch code from S3", attempt(head % "s3://bucket/key.zip"))
        self.assertIn("not valid SAM", attempt(head % "src/" + "      Events:\n        E:\n          Type: Nope\n"))
        self.assertIn("has no default", attempt("Parameters:\n  Size:\n    Type: Number\n" + head % "src/"))
        self.assertIn("no parameter Nope", attempt(head % "src/", "--parameter", "Nope=1"))
        self.assertIn("has no Resources", attempt("Transform: AWS::Serverless-2016-10-31\n"))
        self.assertIn("not valid YAML", attempt("Resources: [\n"))
        # A function made by other means is not taken over.
        iam = self.daemon.client("iam")
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "lambda.amazonaws.com"}}]}
        role = iam.create_role(RoleName="by-hand", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        lam.create_function(FunctionName="refused-Fn", Runtime="python3.11", Role=role, Handler="app.lambda_handler",
                            Code={"ZipFile": make_zip({"app.py": HELLO_APP})})
        try:
            self.assertIn("belongs to no stack", attempt(head % "src/"))
        finally:
            lam.delete_function(FunctionName="refused-Fn")
            iam.delete_role(RoleName="by-hand")


if __name__ == "__main__":
    unittest.main()
