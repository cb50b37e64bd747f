#!/usr/bin/env python3
"""`petrel deploy --sam TEMPLATE`: applies an AWS SAM template to a Petrel daemon.

The AWS SAM translator (PyPI's aws-sam-translator, the code behind `sam deploy` and
CloudFormation's Serverless transform) turns the template into CloudFormation
resources; this program then does what CloudFormation would, with the APIs Petrel
speaks (Lambda, SQS, SNS, Petrel's schedules): it reads what exists, shows a plan,
and changes only what differs. There is no stack service: a stack's functions, queues
and topics carry the tags `petrel:stack` and `petrel:logical-id`, and a later deploy
of the same stack deletes what the template no longer has.

`petrel deploy --sam` runs this with the endpoint and keys in the environment
(PETREL_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
"""

import argparse
import base64
import copy
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
import zipfile

STACK_TAG = "petrel:stack"
LOGICAL_TAG = "petrel:logical-id"
LOCAL_BUCKET = "petrel-local"
UNKNOWN = "(known after apply)"


class DeployError(Exception):
    pass


# --- Reading the template -------------------------------------------------------------

def load_template(path):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation has no YAML timestamps: '2010-09-09' stays a string.
    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def intrinsic(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "Condition":
            return {"Condition": value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Fn::" + suffix: value}

    Loader.add_multi_constructor("!", intrinsic)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=Loader)
    except OSError as e:
        raise DeployError("cannot read %s: %s" % (path, e.strerror))
    except yaml.YAMLError as e:
        raise DeployError("%s is not valid YAML or JSON: %s" % (path, e))
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict) or not doc["Resources"]:
        raise DeployError("%s has no Resources: a SAM template is a map with a Resources section" % path)
    return doc


def stage_artifacts(template, base_dir):
    """Local CodeUri/ContentUri/Code paths become s3://petrel-local/N (the translator wants
    S3 locations, as `sam package` would have made); the folders are zipped at apply."""
    artifacts = {}

    def local(value, what, where):
        if isinstance(value, str) and not value.startswith("s3://"):
            path = os.path.normpath(os.path.join(base_dir, value))
            if not os.path.exists(path):
                raise DeployError("%s: %s %s does not exist (looked at %s)" % (where, what, value, path))
            key = str(len(artifacts))
            artifacts[key] = path
            return key
        raise DeployError(
            "%s: %s must be a folder or .zip file next to the template; Petrel does not fetch code from S3" % (where, what))

    globals_fn = (template.get("Globals") or {}).get("Function") or {}
    if "CodeUri" in globals_fn:
        globals_fn["CodeUri"] = "s3://%s/%s" % (LOCAL_BUCKET, local(globals_fn["CodeUri"], "CodeUri", "Globals"))
    for rid, r in template["Resources"].items():
        if not isinstance(r, dict):
            raise DeployError("resource %s is not a map" % rid)
        props = r.get("Properties") or {}
        kind = r.get("Type")
        if kind == "AWS::Serverless::Function":
            if props.get("PackageType") == "Image":
                raise DeployError("%s: container images are not supported; Petrel runs ZIP functions" % rid)
            if "CodeUri" in props:
                props["CodeUri"] = "s3://%s/%s" % (LOCAL_BUCKET, local(props["CodeUri"], "CodeUri", rid))
        elif kind == "AWS::Serverless::LayerVersion" and "ContentUri" in props:
            props["ContentUri"] = "s3://%s/%s" % (LOCAL_BUCKET, local(props["ContentUri"], "ContentUri", rid))
        elif kind == "AWS::Lambda::Function" and isinstance(props.get("Code"), str):
            props["Code"] = {"S3Bucket": LOCAL_BUCKET, "S3Key": local(props["Code"], "Code", rid)}
        elif kind == "AWS::Lambda::LayerVersion" and isinstance(props.get("Content"), str):
            props["Content"] = {"S3Bucket": LOCAL_BUCKET, "S3Key": local(props["Content"], "Content", rid)}
    return artifacts


class AnyManagedPolicy(dict):
    """The translator maps managed policy names to ARNs; every name is one here."""

    def __contains__(self, name):
        return True

    def __getitem__(self, name):
        return "arn:aws:iam::aws:policy/" + name

    def get(self, name, default=None):
        return self[name]


def translate(template, parameters, region):
    if "AWS::Serverless-2016-10-31" not in json.dumps(template.get("Transform", "")):
        return template
    try:
        from samtranslator.model.exceptions import InvalidDocumentException
        from samtranslator.translator.transform import transform
    except ImportError:
        raise DeployError(
            "the AWS SAM translator is not installed: `python3 -m pip install aws-sam-translator` (PyPI) and deploy again")
    logging.getLogger("samtranslator").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_DEFAULT_REGION", region)

    class Policies:
        def load(self):
            return AnyManagedPolicy()

    try:
        return transform(copy.deepcopy(template), dict(parameters), Policies())
    except InvalidDocumentException as e:
        raise DeployError("the template is not valid SAM:\n" + "\n".join("  " + c.message for c in e.causes))


# --- Intrinsic functions ----------------------------------------------------------------

class Unresolved(Exception):
    pass


class Resolver:
    def __init__(self, template, parameters, pseudo):
        self.template = template
        self.parameters = parameters
        self.pseudo = pseudo
        self.refs = {}  # logical id -> Ref value
        self.atts = {}  # logical id -> {attribute: value}
        self.conditions = {}
        self.strict = False  # at apply, every value must be known

    def condition(self, name):
        if name not in self.conditions:
            body = (self.template.get("Conditions") or {}).get(name)
            if body is None:
                raise DeployError("condition %s is not defined" % name)
            self.conditions[name] = bool(self.value(body))
        return self.conditions[name]

    def unknown(self, what):
        if self.strict:
            raise Unresolved(what)
        return UNKNOWN

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        if name in self.template["Resources"]:
            return self.unknown(name)
        raise DeployError("Ref to %s, which is not a parameter or resource of the template" % name)

    def getatt(self, name, attribute):
        if name not in self.template["Resources"]:
            raise DeployError("Fn::GetAtt of %s, which is not a resource of the template" % name)
        got = self.atts.get(name, {})
        if attribute in got:
            return got[attribute]
        return self.unknown("%s.%s" % (name, attribute))

    def sub(self, text, variables):
        def one(m):
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in variables:
                return str(variables[key])
            if "." in key and key.split(".", 1)[0] in self.template["Resources"]:
                return str(self.getatt(*key.split(".", 1)))
            return str(self.ref(key))
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, v):
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x is not NoValue]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, arg), = v.items()
            if k == "Ref":
                return NoValue if arg == "AWS::NoValue" else self.ref(arg)
            if k == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.getatt(parts[0], self.value(parts[1]))
            if k == "Fn::Sub":
                if isinstance(arg, list):
                    return self.sub(arg[0], {n: self.value(x) for n, x in arg[1].items()})
                return self.sub(arg, {})
            if k == "Fn::Join":
                return str(self.value(arg[0])).join(str(x) for x in self.value(arg[1]))
            if k == "Fn::Select":
                return self.value(arg[1])[int(self.value(arg[0]))]
            if k == "Fn::Split":
                return str(self.value(arg[1])).split(self.value(arg[0]))
            if k == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if k == "Fn::Equals":
                return self.value(arg[0]) == self.value(arg[1])
            if k == "Fn::Not":
                return not self.value(arg[0])
            if k == "Fn::And":
                return all(self.value(x) for x in arg)
            if k == "Fn::Or":
                return any(self.value(x) for x in arg)
            if k == "Condition":
                return self.condition(arg)
            if k == "Fn::FindInMap":
                m, a, b = (self.value(x) for x in arg)
                return self.template["Mappings"][m][a][b]
            if k == "Fn::Base64":
                return base64.b64encode(str(self.value(arg)).encode()).decode()
            if k.startswith("Fn::"):
                raise DeployError("%s is not supported by petrel deploy --sam" % k)
        out = {}
        for key, x in v.items():
            r = self.value(x)
            if r is not NoValue:
                out[key] = r
        return out


class _NoValue:
    pass


NoValue = _NoValue()


def references(v, found):
    """The logical ids a value refers to (Ref, GetAtt, ${…} in Sub)."""
    if isinstance(v, list):
        for x in v:
            references(x, found)
    elif isinstance(v, dict):
        for k, x in v.items():
            if k == "Ref" and isinstance(x, str):
                found.add(x)
            elif k == "Fn::GetAtt":
                found.add((x.split(".", 1) if isinstance(x, str) else x)[0])
            elif k == "Fn::Sub":
                text = x[0] if isinstance(x, list) else x
                for name in re.findall(r"\$\{([^}!][^}]*)\}", text):
                    found.add(name.split(".", 1)[0])
                if isinstance(x, list):
                    references(x[1], found)
            else:
                references(x, found)
    return found


# --- Talking to Petrel ------------------------------------------------------------------

class Petrel:
    def __init__(self, endpoint, region):
        import boto3
        from botocore.config import Config

        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.session = boto3.session.Session(region_name=region)
        config = Config(retries={"max_attempts": 2}, read_timeout=120)
        self.clients = {
            name: self.session.client(name, endpoint_url=self.endpoint, config=config)
            for name in ("lambda", "sqs", "sns", "logs", "sts", "iam")
        }

    def __getattr__(self, name):
        return self.clients[{"lam": "lambda"}.get(name, name)]

    def petrel(self, method, path, body=None):
        """Petrel's own resources (schedules), signed like the Lambda API."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        data = json.dumps(body).encode() if body is not None else None
        request = AWSRequest(method=method, url=self.endpoint + path, data=data,
                             headers={"Content-Type": "application/json"} if data else {})
        SigV4Auth(self.session.get_credentials(), "lambda", self.region).add_auth(request)
        prepared = urllib.request.Request(request.url, data=data, method=method, headers=dict(request.headers))
        try:
            with urllib.request.urlopen(prepared, timeout=60) as r:
                raw = r.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)
            except ValueError:
                err = {"Message": raw.decode(errors="replace")}
            if e.code == 404:
                return None
            raise DeployError("%s %s: %s" % (method, path, err.get("Message") or err.get("message") or e.code))


def error_code(e):
    return getattr(e, "response", {}).get("Error", {}).get("Code", "")


def missing(call, *codes):
    """The call's answer, or None when the resource does not exist."""
    try:
        return call()
    except Exception as e:  # botocore.exceptions.ClientError
        if error_code(e) in codes + ("ResourceNotFoundException", "NotFound", "NotFoundException"):
            return None
        raise


def code_zip(path):
    """A folder's ZIP with fixed timestamps, so that the same files give the same
    CodeSha256 and an unchanged function is not updated."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                info = zipfile.ZipInfo(os.path.relpath(full, path), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(full).st_mode & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as f:
                    z.writestr(info, f.read())
    return buf.getvalue()


def sha256_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def function_and_qualifier(value):
    """`name`, `name:qualifier`, or a function ARN with or without its qualifier."""
    value = str(value)
    if value.startswith("arn:"):
        parts = value.split(":")
        return parts[6], (parts[7] if len(parts) > 7 else None)
    if ":" in value:
        name, q = value.split(":", 1)
        return name, q
    return value, None


def tag_list(v):
    if isinstance(v, dict):
        return dict(v)
    return {t["Key"]: str(t["Value"]) for t in v or []}


def policy_doc(v):
    """A policy document, whether given as JSON text or parsed, in one comparable form."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return v
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def canonical(v):
    """Attribute values as SQS and SNS keep them: strings, JSON documents compact."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    s = str(v)
    if s[:1] in "{[":
        try:
            return json.dumps(json.loads(s), sort_keys=True, separators=(",", ":"))
        except ValueError:
            pass
    return s


# --- Resources --------------------------------------------------------------------------

class Change:
    """One line of the plan: what happens to one resource, and how to do it."""

    def __init__(self, rid, kind, action, summary, apply=None):
        self.rid, self.kind, self.action, self.summary, self.apply = rid, kind, action, summary, apply


SYMBOLS = {"create": "+", "update": "~", "replace": "±", "shift": ">", "delete": "-", "unchanged": "=", "none": "·"}

# Types that make no object on Petrel: their values are recorded, their effect is elsewhere.
VIRTUAL = {
    "AWS::IAM::Policy": "not created: Petrel has no IAM policies yet",
    "AWS::IAM::ManagedPolicy": "not created: Petrel has no IAM policies yet",
    "AWS::CodeDeploy::Application": "not created: Petrel shifts alias weights itself (see the alias)",
    "AWS::CodeDeploy::DeploymentGroup": "not created: Petrel shifts alias weights itself (see the alias)",
    "AWS::ApiGatewayV2::Api": "not created: its routes reach their functions through function URLs",
    "AWS::ApiGatewayV2::Stage": "not created: its routes reach their functions through function URLs",
    "AWS::ApiGateway::RestApi": "not created: its routes reach their functions through function URLs",
    "AWS::ApiGateway::Deployment": "not created: its routes reach their functions through function URLs",
    "AWS::ApiGateway::Stage": "not created: its routes reach their functions through function URLs",
    "AWS::SQS::QueuePolicy": "not created: access to queues goes by account on Petrel",
    "AWS::SNS::TopicPolicy": "not created: access to topics goes by account on Petrel",
}

# AWS managed policies SAM attaches to the roles it makes, as inline policies of the same
# permissions (Petrel has no managed policies); any other managed policy is left out with a warning.
LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
MANAGED = {
    "AWSLambdaBasicExecutionRole": LOGS,
    "AWSLambdaSQSQueueExecutionRole": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] + LOGS,
    "AWSLambdaMQExecutionRole": ["mq:DescribeBroker", "secretsmanager:GetSecretValue"] + LOGS,
    "AWSLambdaRole": ["lambda:InvokeFunction"],
}


def managed_policies(arns):
    """(inline policies standing for the managed ones Petrel knows, the ARNs it does not)."""
    known, unknown = [], []
    for arn in arns or []:
        name = str(arn).rsplit("/", 1)[-1]
        if name in MANAGED:
            known.append({"PolicyName": "managed-" + name, "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": MANAGED[name], "Resource": "*"}]}})
        else:
            unknown.append(str(arn))
    return known, unknown


FUNCTION_DEFAULTS = {"MemorySize": 128, "Timeout": 3, "Description": "", "Environment": {"Variables": {}}, "Layers": [],
                     "EphemeralStorage": {"Size": 512}}
FUNCTION_SETTINGS = ("Runtime", "Handler", "MemorySize", "Timeout", "Description", "Role", "Environment", "Layers",
                     "EphemeralStorage", "DeadLetterConfig")
IGNORED_FUNCTION = ("TracingConfig", "KmsKeyArn", "Architectures", "LoggingConfig", "SnapStart", "RuntimeManagementConfig",
                    "Code", "FunctionName", "Tags", "ReservedConcurrentExecutions", "PackageType")

SHIFTS = re.compile(r"^(?:CodeDeployDefault\.Lambda)?(?:(AllAtOnce)|Canary(\d+)Percent(\d+)Minutes?|Linear(\d+)PercentEvery(\d+)Minutes?)$")


class Deployment:
    def __init__(self, api, stack, template, artifacts, parameters, out):
        self.api = api
        self.stack = stack
        self.template = template
        self.artifacts = artifacts
        self.out = out
        self.warnings = []
        self.zips = {}
        account = api.sts.get_caller_identity()["Account"]
        self.account = account
        self.region = api.region
        pseudo = {"AWS::Region": api.region, "AWS::AccountId": account, "AWS::StackName": stack, "AWS::Partition": "aws",
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackId": "arn:aws:cloudformation:%s:%s:stack/%s/petrel" % (
                      api.region, account, stack), "AWS::NotificationARNs": []}
        self.resolver = Resolver(template, parameters, pseudo)
        self.resources = template["Resources"]
        self.function_ids = set()
        self.changed_functions = set()
        self.wanted_mappings, self.wanted_subscriptions, self.wanted_schedules = set(), set(), set()
        self.wanted_permissions = set()
        self.api_urls = {}

    # names

    def physical(self, rid, given, limit, suffix=""):
        if given not in (None, UNKNOWN):
            return str(given)
        base = "%s-%s" % (self.stack, rid)
        return base[: limit - len(suffix)] + suffix

    def lambda_arn(self, name, qualifier=None):
        arn = "arn:aws:lambda:%s:%s:function:%s" % (self.region, self.account, name)
        return arn + (":" + qualifier if qualifier else "")

    def stack_tags(self, rid):
        return {STACK_TAG: self.stack, LOGICAL_TAG: rid}

    def zip_of(self, code, rid):
        if "ZipFile" in code:
            data = code_zip_inline(code["ZipFile"])
        elif code.get("S3Bucket") == LOCAL_BUCKET:
            key = code["S3Key"]
            if key not in self.zips:
                self.zips[key] = code_zip(self.artifacts[key])
            data = self.zips[key]
        else:
            raise DeployError("%s: code must be a local folder or .zip file, or inline code" % rid)
        if len(data) > 50 * 1024 * 1024:
            raise DeployError("%s: its ZIP is %d MB; Petrel takes 50 MB at most" % (rid, len(data) // (1024 * 1024)))
        return data

    # order

    def order(self):
        deps = {}
        for rid, r in self.resources.items():
            found = references(r.get("Properties") or {}, set())
            d = r.get("DependsOn") or []
            found |= set([d] if isinstance(d, str) else d)
            policy = (r.get("UpdatePolicy") or {}).get("CodeDeployLambdaAliasUpdate")
            if policy:
                found |= references(policy, set())
            deps[rid] = {x for x in found if x in self.resources and x != rid}
        done, result, visiting = set(), [], set()

        def visit(rid):
            if rid in done:
                return
            if rid in visiting:
                raise DeployError("the resources refer to each other in a circle through %s" % rid)
            visiting.add(rid)
            for d in sorted(deps[rid]):
                visit(d)
            visiting.discard(rid)
            done.add(rid)
            result.append(rid)

        for rid in sorted(self.resources):
            visit(rid)
        return result

    def included(self, rid):
        cond = self.resources[rid].get("Condition")
        return cond is None or self.resolver.condition(cond)

    def check_types(self):
        unsupported = sorted({
            "%s (%s)" % (r.get("Type"), rid) for rid, r in self.resources.items()
            if r.get("Type") not in VIRTUAL and not hasattr(self, "plan_" + str(r.get("Type")).replace("::", "_"))
        })
        if unsupported:
            raise DeployError("Petrel cannot deploy these resource types: " + ", ".join(unsupported))

    # the plan

    def plan(self):
        self.check_types()
        self.function_ids = {rid for rid, r in self.resources.items() if r["Type"] == "AWS::Lambda::Function"}
        changes = []
        for rid in self.order():
            r = self.resources[rid]
            if not self.included(rid):
                continue
            kind = r["Type"]
            if kind in VIRTUAL:
                self.virtual(rid, kind)
                changes.append(Change(rid, kind, "none", VIRTUAL[kind]))
                continue
            props = self.resolver.value(r.get("Properties") or {})
            changes.append(getattr(self, "plan_" + kind.replace("::", "_"))(rid, props, r))
        changes += self.api_routes()
        changes += self.prune()
        return changes

    def apply(self, changes):
        self.resolver.strict = True
        for c in changes:
            if c.apply is None:
                continue
            r = self.resources.get(c.rid)
            props = self.resolver.value(r.get("Properties") or {}) if r is not None and c.action != "delete" else {}
            self.out("%s %s %s ... " % (SYMBOLS[c.action], c.rid, c.action), end="")
            try:
                result = c.apply(props)
            except Exception as e:
                # No rollback (there is no stack service): say exactly where it stopped.
                self.out("failed")
                raise DeployError("%s (%s) failed: %s\nThe changes above it are applied; those after it are not. "
                                  "Fix the template and deploy again." % (c.rid, c.kind, str(e).strip()))
            self.out(result or "done")

    def virtual(self, rid, kind):
        self.resolver.refs[rid] = "%s-%s" % (self.stack, rid)

    # AWS::IAM::Role: the role, its trust policy and its inline policies (Petrel has no managed
    # policies: ManagedPolicyArns, such as SAM's AWSLambdaBasicExecutionRole, are left out, and
    # a function's logs are kept without them).

    def plan_AWS_IAM_Role(self, rid, props, r):
        name = self.physical(rid, props.get("RoleName"), 64)
        path = props.get("Path") or "/"
        self.resolver.refs[rid] = name
        current = missing(lambda: self.api.iam.get_role(RoleName=name), "NoSuchEntity")
        self.resolver.atts[rid] = {"Arn": "arn:aws:iam::%s:role%s%s" % (self.account, path, name),
                                   "RoleId": (current or {}).get("Role", {}).get("RoleId", UNKNOWN)}
        managed, unknown = managed_policies(props.get("ManagedPolicyArns"))
        if unknown:
            self.warnings.append("%s: these managed policies are not attached (Petrel has no managed policies; give the "
                                 "permissions as Policies): %s" % (rid, ", ".join(unknown)))
        want = {p["PolicyName"]: policy_doc(p["PolicyDocument"]) for p in (props.get("Policies") or []) + managed}
        trust = policy_doc(props.get("AssumeRolePolicyDocument") or {})
        if current is None:
            def create(p):
                out = self.api.iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=json.dumps(
                    p["AssumeRolePolicyDocument"]), **({"Description": p["Description"]} if "Description" in p else {}))
                for pol in (p.get("Policies") or []) + managed_policies(p.get("ManagedPolicyArns"))[0]:
                    self.api.iam.put_role_policy(RoleName=name, PolicyName=pol["PolicyName"],
                                                 PolicyDocument=json.dumps(pol["PolicyDocument"]))
                self.resolver.atts[rid]["RoleId"] = out["Role"]["RoleId"]
                return "created role %s" % name
            return Change(rid, "AWS::IAM::Role", "create", "role %s" % name, create)
        have = {n: policy_doc(self.api.iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"])
                for n in self.api.iam.list_role_policies(RoleName=name)["PolicyNames"]}
        differs = (["trust policy"] if policy_doc(current["Role"]["AssumeRolePolicyDocument"]) != trust else []) + \
            (["policies"] if have != want else [])
        if not differs:
            return Change(rid, "AWS::IAM::Role", "unchanged", "role %s" % name)

        def update(p):
            if "trust policy" in differs:
                self.api.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(p["AssumeRolePolicyDocument"]))
            given = {pol["PolicyName"]: pol["PolicyDocument"]
                     for pol in (p.get("Policies") or []) + managed_policies(p.get("ManagedPolicyArns"))[0]}
            for n, doc in given.items():
                if have.get(n) != policy_doc(doc):
                    self.api.iam.put_role_policy(RoleName=name, PolicyName=n, PolicyDocument=json.dumps(doc))
            for n in have:
                if n not in given:
                    self.api.iam.delete_role_policy(RoleName=name, PolicyName=n)
            return "updated " + ", ".join(differs)
        return Change(rid, "AWS::IAM::Role", "update", "role %s: %s" % (name, ", ".join(differs)), update)

    # AWS::Lambda::Function

    def plan_AWS_Lambda_Function(self, rid, props, r):
        name = self.physical(rid, props.get("FunctionName"), 64)
        self.resolver.refs[rid] = name
        self.resolver.atts[rid] = {"Arn": self.lambda_arn(name)}
        for k in props:
            if k not in FUNCTION_SETTINGS and k not in IGNORED_FUNCTION:
                self.warnings.append("%s: %s is not supported and was left out" % (rid, k))
        current = missing(lambda: self.api.lam.get_function(FunctionName=name))
        code = self.zip_of(props.get("Code") or {}, rid)
        if current is None:
            def create(p):
                data = self.zip_of(p.get("Code") or {}, rid)
                args = {k: p[k] for k in FUNCTION_SETTINGS if k in p}
                args.setdefault("Role", "arn:aws:iam::%s:role/%s-%s" % (self.account, self.stack, rid))
                args["Tags"] = dict(tag_list(p.get("Tags")), **self.stack_tags(rid))
                out = self.api.lam.create_function(FunctionName=name, Code={"ZipFile": data}, Publish=False, **args)
                self.reserved(name, p)
                return "created %s (%s)" % (name, out["CodeSha256"][:12])
            self.changed_functions.add(name)
            return Change(rid, "AWS::Lambda::Function", "create", "function %s" % name, create)
        self.owned(rid, current.get("Tags") or {}, "function " + name)
        differs = self.function_differences(props, current, code)
        if not differs:
            return Change(rid, "AWS::Lambda::Function", "unchanged", "function %s" % name)
        self.changed_functions.add(name)

        def update(p):
            data = self.zip_of(p.get("Code") or {}, rid)
            fresh = self.api.lam.get_function(FunctionName=name)
            now = self.function_differences(p, fresh, data)
            if "code" in now:
                self.api.lam.update_function_code(FunctionName=name, ZipFile=data)
            settings = {k: p[k] for k in FUNCTION_SETTINGS if k in p and k in now}
            for k in now:
                if k not in settings and k in FUNCTION_SETTINGS and k != "Role":
                    settings[k] = FUNCTION_DEFAULTS.get(k)
            settings = {k: v for k, v in settings.items() if v is not None}
            if settings:
                self.api.lam.update_function_configuration(FunctionName=name, **settings)
            self.api.lam.tag_resource(Resource=self.lambda_arn(name),
                                      Tags=dict(tag_list(p.get("Tags")), **self.stack_tags(rid)))
            self.reserved(name, p)
            return "updated " + ", ".join(now) if now else "unchanged"
        return Change(rid, "AWS::Lambda::Function", "update", "function %s: %s" % (name, ", ".join(differs)), update)

    def function_differences(self, props, current, code):
        c = current["Configuration"]
        out = []
        if sha256_b64(code) != c.get("CodeSha256"):
            out.append("code")
        have = {
            "Runtime": c.get("Runtime"), "Handler": c.get("Handler"), "MemorySize": c.get("MemorySize"),
            "Timeout": c.get("Timeout"), "Description": c.get("Description") or "",
            "Environment": {"Variables": (c.get("Environment") or {}).get("Variables") or {}},
            "Layers": [x["Arn"] for x in c.get("Layers") or []],
            "EphemeralStorage": c.get("EphemeralStorage") or {"Size": 512},
            "DeadLetterConfig": c.get("DeadLetterConfig") or {},
        }
        for k in have:
            w = props.get(k, FUNCTION_DEFAULTS.get(k))
            if k == "Environment":
                w = {"Variables": {a: str(b) for a, b in ((w or {}).get("Variables") or {}).items()}}
            if w is not None and canonical(w) != canonical(have[k]):
                out.append(k)
        reserved = (current.get("Concurrency") or {}).get("ReservedConcurrentExecutions")
        if canonical(props.get("ReservedConcurrentExecutions")) != canonical(reserved):
            out.append("ReservedConcurrentExecutions")
        return out

    def reserved(self, name, props):
        want = props.get("ReservedConcurrentExecutions")
        have = (self.api.lam.get_function_concurrency(FunctionName=name) or {}).get("ReservedConcurrentExecutions")
        if want is not None and int(want) != have:
            self.api.lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=int(want))
        elif want is None and have is not None:
            self.api.lam.delete_function_concurrency(FunctionName=name)

    # AWS::Lambda::LayerVersion

    def plan_AWS_Lambda_LayerVersion(self, rid, props, r):
        name = self.physical(rid, props.get("LayerName"), 140)
        data = self.zip_of(props.get("Content") or {}, rid)
        sha = sha256_b64(data)
        versions = self.api.lam.list_layer_versions(LayerName=name).get("LayerVersions") or []
        latest = versions[0] if versions else None
        same = False
        if latest is not None:
            got = self.api.lam.get_layer_version_by_arn(Arn=latest["LayerVersionArn"])
            same = (got["Content"].get("CodeSha256") == sha
                    and sorted(got.get("CompatibleRuntimes") or []) == sorted(props.get("CompatibleRuntimes") or [])
                    and (got.get("Description") or "") == (props.get("Description") or ""))
        if same:
            self.resolver.refs[rid] = latest["LayerVersionArn"]
            self.resolver.atts[rid] = {}
            return Change(rid, "AWS::Lambda::LayerVersion", "unchanged", latest["LayerVersionArn"])

        def publish(p):
            args = {k: p[k] for k in ("Description", "CompatibleRuntimes", "LicenseInfo", "CompatibleArchitectures") if k in p}
            out = self.api.lam.publish_layer_version(LayerName=name, Content={"ZipFile": self.zip_of(p["Content"], rid)}, **args)
            self.resolver.refs[rid] = out["LayerVersionArn"]
            return "published " + out["LayerVersionArn"]
        return Change(rid, "AWS::Lambda::LayerVersion", "create",
                      "publish layer %s version %d" % (name, (latest or {}).get("Version", 0) + 1), publish)

    # AWS::Lambda::Version

    def plan_AWS_Lambda_Version(self, rid, props, r):
        name, _ = function_and_qualifier(props["FunctionName"])
        if name == UNKNOWN:
            raise DeployError("%s: its function's name must be known" % rid)
        existing = []
        if missing(lambda: self.api.lam.get_function(FunctionName=name)) is not None:
            existing = [v for v in self.api.lam.list_versions_by_function(FunctionName=name)["Versions"]
                        if v["Version"] != "$LATEST"]
        pending = name in self.changed_functions
        if existing and not pending:
            latest = self.api.lam.get_function(FunctionName=name)["Configuration"]
            pending = latest.get("CodeSha256") != existing[-1].get("CodeSha256")
        if existing and not pending:
            v = existing[-1]["Version"]
            self.resolver.refs[rid] = self.lambda_arn(name, v)
            self.resolver.atts[rid] = {"Version": v}
            return Change(rid, "AWS::Lambda::Version", "unchanged", "%s version %s" % (name, v))
        self.resolver.atts[rid] = {"Version": UNKNOWN}
        return Change(rid, "AWS::Lambda::Version", "create", "publish a version of %s" % name,
                      lambda p: self.publish(rid, name, p))

    def publish(self, rid, name, props):
        args = {"Description": props["Description"]} if "Description" in props else {}
        out = self.api.lam.publish_version(FunctionName=name, **args)
        self.resolver.refs[rid] = out["FunctionArn"]
        self.resolver.atts[rid] = {"Version": out["Version"]}
        return "version %s" % out["Version"]

    # AWS::Lambda::Alias (with DeploymentPreference: a weighted shift)

    def plan_AWS_Lambda_Alias(self, rid, props, r):
        name, _ = function_and_qualifier(props["FunctionName"])
        alias = props["Name"]
        self.resolver.refs[rid] = self.lambda_arn(name, alias)
        self.resolver.atts[rid] = {}
        current = missing(lambda: self.api.lam.get_alias(FunctionName=name, Name=alias))
        shift = self.deployment(rid, r)
        wanted = props["FunctionVersion"]
        if current is None:
            return Change(rid, "AWS::Lambda::Alias", "create", "alias %s of %s -> version %s" % (alias, name, wanted),
                          lambda p: self.set_alias(name, alias, p, None, None))
        routed = (current.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        if current["FunctionVersion"] == wanted and not routed and (current.get("Description") or "") == props.get(
                "Description", ""):
            return Change(rid, "AWS::Lambda::Alias", "unchanged", "alias %s -> version %s" % (alias, wanted))
        old = current["FunctionVersion"]
        if shift and shift[1]:
            return Change(rid, "AWS::Lambda::Alias", "shift", "alias %s: version %s -> %s, %s" % (
                alias, old, wanted, describe_shift(shift)), lambda p: self.set_alias(name, alias, p, current, shift))
        return Change(rid, "AWS::Lambda::Alias", "update", "alias %s: version %s -> %s" % (alias, old, wanted),
                      lambda p: self.set_alias(name, alias, p, current, shift))

    def deployment(self, rid, r):
        policy = (r.get("UpdatePolicy") or {}).get("CodeDeployLambdaAliasUpdate")
        if not policy:
            return None
        group = self.resolver.value(policy.get("DeploymentGroupName"))
        gid = next((g for g, x in self.resources.items() if x.get("Type") == "AWS::CodeDeploy::DeploymentGroup"
                    and self.resolver.refs.get(g) == group), None)
        if gid is None:
            return None
        gprops = self.resolver.value(self.resources[gid].get("Properties") or {})
        config = str(gprops.get("DeploymentConfigName", "CodeDeployDefault.LambdaAllAtOnce"))
        m = SHIFTS.match(config)
        if not m:
            raise DeployError("%s: deployment type %s is not one of Petrel's (AllAtOnce, CanaryNPercentMMinutes, "
                              "LinearNPercentEveryMMinutes)" % (rid, config))
        for hook in ("BeforeAllowTrafficHook", "AfterAllowTrafficHook"):
            if policy.get(hook):
                self.warnings.append("%s: the %s is not run: Petrel has no CodeDeploy lifecycle API" % (rid, hook))
        if gprops.get("AlarmConfiguration"):
            self.warnings.append("%s: alarms are not watched during the shift: Petrel has no CloudWatch alarms" % rid)
        if m.group(1):
            return (config, [])
        if m.group(2):
            return (config, [(int(m.group(2)), int(m.group(3)))])
        step, every = int(m.group(4)), int(m.group(5))
        return (config, [(p, every) for p in range(step, 100, step)])

    def set_alias(self, name, alias, props, current, shift):
        wanted = str(props["FunctionVersion"])
        description = props.get("Description", "")
        if current is None:
            self.api.lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=wanted, Description=description)
            return "created, version %s" % wanted
        old = current["FunctionVersion"]
        routed = (current.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        if old == wanted and not routed and (current.get("Description") or "") == description:
            return "unchanged"
        if old != wanted and shift and shift[1]:
            minute = float(os.environ.get("PETREL_SAM_MINUTE_SECONDS", "60"))
            for percent, minutes in shift[1]:
                self.api.lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=old, Description=description,
                                          RoutingConfig={"AdditionalVersionWeights": {wanted: percent / 100.0}})
                self.out("\n    %d%% of %s's traffic to version %s for %d min" % (percent, alias, wanted, minutes), end="")
                sys.stdout.flush()
                time.sleep(minutes * minute)
            self.out("\n    ", end="")
        self.api.lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=wanted, Description=description,
                                  RoutingConfig={"AdditionalVersionWeights": {}})
        return "version %s takes all traffic" % wanted

    # AWS::Lambda::Url

    def plan_AWS_Lambda_Url(self, rid, props, r):
        name, q = function_and_qualifier(props["TargetFunctionArn"])
        q = props.get("Qualifier", q)
        args = {"FunctionName": name, **({"Qualifier": q} if q else {})}
        current = missing(lambda: self.api.lam.get_function_url_config(**args))
        settings = {"AuthType": props.get("AuthType", "NONE"), "Cors": props.get("Cors") or {},
                    "InvokeMode": props.get("InvokeMode", "BUFFERED")}
        self.resolver.refs[rid] = self.lambda_arn(name, q)
        self.resolver.atts[rid] = {"FunctionArn": self.lambda_arn(name, q),
                                   "FunctionUrl": current["FunctionUrl"] if current else UNKNOWN}
        label = "URL of %s" % (name + (":" + q if q else ""))

        def create(p):
            out = self.api.lam.create_function_url_config(**args, **settings)
            self.resolver.atts[rid]["FunctionUrl"] = out["FunctionUrl"]
            return out["FunctionUrl"]

        def update(p):
            out = self.api.lam.update_function_url_config(**args, **settings)
            self.resolver.atts[rid]["FunctionUrl"] = out["FunctionUrl"]
            return out["FunctionUrl"]
        if current is None:
            return Change(rid, "AWS::Lambda::Url", "create", label, create)
        have = {"AuthType": current.get("AuthType"), "Cors": current.get("Cors") or {},
                "InvokeMode": current.get("InvokeMode", "BUFFERED")}
        if canonical(have) == canonical(settings):
            return Change(rid, "AWS::Lambda::Url", "unchanged", "%s %s" % (label, current["FunctionUrl"]))
        return Change(rid, "AWS::Lambda::Url", "update", label, update)

    # AWS::Lambda::Permission

    def plan_AWS_Lambda_Permission(self, rid, props, r):
        name, q = function_and_qualifier(props["FunctionName"])
        sid = rid[:100]
        args = {"FunctionName": name, **({"Qualifier": q} if q else {})}
        self.resolver.refs[rid] = sid
        self.wanted_permissions.add((name, q or None, sid))
        policy = missing(lambda: self.api.lam.get_policy(**args))
        sids = {s.get("Sid") for s in json.loads(policy["Policy"]).get("Statement", [])} if policy else set()
        if sid in sids:
            return Change(rid, "AWS::Lambda::Permission", "unchanged", "allow %s %s on %s" % (
                props.get("Principal"), props.get("Action"), name + (":" + q if q else "")))

        def add(p):
            keys = ("Action", "Principal", "SourceArn", "SourceAccount", "FunctionUrlAuthType")
            extra = {k: p[k] for k in keys if k in p and p[k] != UNKNOWN}
            if "InvokedViaFunctionUrl" in p:
                extra["InvokedViaFunctionUrl"] = bool(p["InvokedViaFunctionUrl"])
            self.api.lam.add_permission(StatementId=sid, **args, **extra)
        return Change(rid, "AWS::Lambda::Permission", "create", "allow %s %s on %s" % (
            props.get("Principal"), props.get("Action"), name + (":" + q if q else "")), add)

    # AWS::Lambda::EventSourceMapping

    def plan_AWS_Lambda_EventSourceMapping(self, rid, props, r):
        name, q = function_and_qualifier(props["FunctionName"])
        source = props.get("EventSourceArn")
        existing = self.mappings_of(name)
        match = None
        for m in existing:
            fn, mq = function_and_qualifier(m["FunctionArn"])
            if (source and m.get("EventSourceArn") == source) or (
                    not source and canonical(m.get("SelfManagedEventSource")) == canonical(
                        props.get("SelfManagedEventSource"))):
                if (mq or None) == (q or None):
                    match = m
                    break
        self.wanted_mappings.add((name, q or None, source or canonical(props.get("SelfManagedEventSource"))))
        self.resolver.refs[rid] = match["UUID"] if match else UNKNOWN
        self.resolver.atts[rid] = {"EventSourceMappingArn": match.get("EventSourceMappingArn") if match else UNKNOWN}
        settable = ("BatchSize", "Enabled", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes", "FilterCriteria",
                    "ScalingConfig", "DestinationConfig", "MaximumRetryAttempts", "BisectBatchOnFunctionError",
                    "MaximumRecordAgeInSeconds")
        label = "%s -> %s" % (short(source) if source else "self-managed source", name + (":" + q if q else ""))
        if match is None:
            def create(p):
                args = {k: v for k, v in p.items() if k != "Tags"}
                args["FunctionName"] = self.lambda_arn(name, q)
                out = self.api.lam.create_event_source_mapping(**args)
                self.resolver.refs[rid] = out["UUID"]
                return out["UUID"]
            return Change(rid, "AWS::Lambda::EventSourceMapping", "create", label, create)
        defaults = {"Enabled": True}
        differs = []
        for k in settable:
            if k in props or k in defaults:
                have = match.get(k)
                if k == "Enabled":
                    have = match.get("State") not in ("Disabled", "Disabling")
                if canonical(props.get(k, defaults.get(k))) != canonical(have):
                    differs.append(k)
        if not differs:
            return Change(rid, "AWS::Lambda::EventSourceMapping", "unchanged", label)

        def update(p):
            self.api.lam.update_event_source_mapping(UUID=match["UUID"], **{k: p.get(k, defaults.get(k)) for k in differs})
        return Change(rid, "AWS::Lambda::EventSourceMapping", "update", "%s: %s" % (label, ", ".join(differs)), update)

    def mappings_of(self, name):
        if missing(lambda: self.api.lam.get_function(FunctionName=name)) is None:
            return []
        return list(self.paged(self.api.lam.list_event_source_mappings, "EventSourceMappings", FunctionName=name))

    def paged(self, call, key, **args):
        marker = None
        while True:
            out = call(**args, **({"Marker": marker} if marker else {}))
            yield from out.get(key) or []
            marker = out.get("NextMarker")
            if not marker:
                return

    # AWS::SQS::Queue

    def plan_AWS_SQS_Queue(self, rid, props, r):
        fifo = str(props.get("FifoQueue", "")).lower() == "true"
        name = self.physical(rid, props.get("QueueName"), 80, ".fifo" if fifo else "")
        attrs = {k: canonical(v) for k, v in props.items() if k not in ("QueueName", "Tags")}
        tags = dict(tag_list(props.get("Tags")), **self.stack_tags(rid))
        url = missing(lambda: self.api.sqs.get_queue_url(QueueName=name), "AWS.SimpleQueueService.NonExistentQueue",
                      "QueueDoesNotExist")
        arn = "arn:aws:sqs:%s:%s:%s" % (self.region, self.account, name)
        self.resolver.atts[rid] = {"Arn": arn, "QueueName": name, "QueueUrl": url["QueueUrl"] if url else UNKNOWN}
        self.resolver.refs[rid] = url["QueueUrl"] if url else UNKNOWN
        if url is None:
            def create(p):
                a = {k: canonical(v) for k, v in p.items() if k not in ("QueueName", "Tags")}
                out = self.api.sqs.create_queue(QueueName=name, Attributes=a, tags=tags)
                self.resolver.refs[rid] = self.resolver.atts[rid]["QueueUrl"] = out["QueueUrl"]
                return out["QueueUrl"]
            return Change(rid, "AWS::SQS::Queue", "create", "queue %s" % name, create)
        self.owned(rid, self.api.sqs.list_queue_tags(QueueUrl=url["QueueUrl"]).get("Tags") or {}, "queue " + name)
        have = self.api.sqs.get_queue_attributes(QueueUrl=url["QueueUrl"], AttributeNames=["All"])["Attributes"]
        differs = [k for k, v in attrs.items() if k not in ("FifoQueue",) and canonical(have.get(k)) != v]
        if not differs:
            return Change(rid, "AWS::SQS::Queue", "unchanged", "queue %s" % name)

        def update(p):
            a = {k: canonical(p[k]) for k in differs}
            self.api.sqs.set_queue_attributes(QueueUrl=url["QueueUrl"], Attributes=a)
        return Change(rid, "AWS::SQS::Queue", "update", "queue %s: %s" % (name, ", ".join(differs)), update)

    def owned(self, rid, tags, what):
        """A resource of the same name that another stack (or no stack) made is not taken over."""
        if tags.get(STACK_TAG) != self.stack:
            owner = "stack " + tags[STACK_TAG] if STACK_TAG in tags else "no stack (it was made by other means)"
            raise DeployError("%s: %s exists already and belongs to %s; delete it or name %s differently" % (
                rid, what, owner, rid))

    # AWS::SNS::Topic and AWS::SNS::Subscription

    def plan_AWS_SNS_Topic(self, rid, props, r):
        fifo = str(props.get("FifoTopic", "")).lower() == "true"
        name = self.physical(rid, props.get("TopicName"), 256, ".fifo" if fifo else "")
        arn = "arn:aws:sns:%s:%s:%s" % (self.region, self.account, name)
        self.resolver.refs[rid] = arn
        self.resolver.atts[rid] = {"TopicArn": arn, "TopicName": name}
        attrs = {k: canonical(v) for k, v in props.items() if k in ("DisplayName", "ContentBasedDeduplication",
                                                                      "DeliveryPolicy", "FifoTopic")}
        for s in props.get("Subscription") or []:
            self.wanted_subscriptions.add((arn, s["Protocol"], s["Endpoint"]))
        current = missing(lambda: self.api.sns.get_topic_attributes(TopicArn=arn))
        tags = dict(tag_list(props.get("Tags")), **self.stack_tags(rid))
        subs = props.get("Subscription") or []

        def subscribe(p):
            have = {(s["Protocol"], s["Endpoint"]) for s in self.subscriptions_of(arn)}
            for s in p.get("Subscription") or []:
                if (s["Protocol"], s["Endpoint"]) not in have:
                    self.api.sns.subscribe(TopicArn=arn, Protocol=s["Protocol"], Endpoint=s["Endpoint"])

        if current is None:
            def create(p):
                a = {k: canonical(v) for k, v in p.items() if k in attrs}
                self.api.sns.create_topic(Name=name, Attributes=a, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
                subscribe(p)
                return arn
            return Change(rid, "AWS::SNS::Topic", "create", "topic %s" % name, create)
        self.owned(rid, {t["Key"]: t["Value"] for t in self.api.sns.list_tags_for_resource(ResourceArn=arn)["Tags"]},
                   "topic " + name)
        have = current["Attributes"]
        differs = [k for k, v in attrs.items() if k != "FifoTopic" and canonical(have.get(k, "")) != v]
        existing = {(s["Protocol"], s["Endpoint"]) for s in self.subscriptions_of(arn)}
        new_subs = [s for s in subs if (s["Protocol"], s["Endpoint"]) not in existing]
        if not differs and not new_subs:
            return Change(rid, "AWS::SNS::Topic", "unchanged", "topic %s" % name)

        def update(p):
            for k in differs:
                self.api.sns.set_topic_attributes(TopicArn=arn, AttributeName=k, AttributeValue=canonical(p[k]))
            subscribe(p)
        what = differs + ["%d subscription(s)" % len(new_subs)] * bool(new_subs)
        return Change(rid, "AWS::SNS::Topic", "update", "topic %s: %s" % (name, ", ".join(what)), update)

    def subscriptions_of(self, topic):
        if missing(lambda: self.api.sns.get_topic_attributes(TopicArn=topic)) is None:
            return []
        out, token = [], None
        while True:
            page = self.api.sns.list_subscriptions_by_topic(TopicArn=topic, **({"NextToken": token} if token else {}))
            out += page.get("Subscriptions") or []
            token = page.get("NextToken")
            if not token:
                return out

    def plan_AWS_SNS_Subscription(self, rid, props, r):
        topic, protocol, endpoint = props["TopicArn"], props["Protocol"], props["Endpoint"]
        self.wanted_subscriptions.add((topic, protocol, endpoint))
        match = next((s for s in self.subscriptions_of(topic) if s["Protocol"] == protocol and s["Endpoint"] == endpoint),
                     None)
        self.resolver.refs[rid] = match["SubscriptionArn"] if match else UNKNOWN
        attrs = {k: canonical(v) for k, v in props.items() if k in ("FilterPolicy", "FilterPolicyScope",
                                                                      "RawMessageDelivery", "RedrivePolicy")}
        label = "%s -> %s" % (short(topic), short(endpoint))
        if match is None:
            def create(p):
                a = {k: canonical(p[k]) for k in attrs}
                out = self.api.sns.subscribe(TopicArn=p["TopicArn"], Protocol=protocol, Endpoint=p["Endpoint"],
                                             Attributes=a, ReturnSubscriptionArn=True)
                self.resolver.refs[rid] = out["SubscriptionArn"]
            return Change(rid, "AWS::SNS::Subscription", "create", label, create)
        have = {}
        if match["SubscriptionArn"].startswith("arn:"):
            have = self.api.sns.get_subscription_attributes(SubscriptionArn=match["SubscriptionArn"])["Attributes"]
        differs = [k for k, v in attrs.items() if canonical(have.get(k, "")) != v]
        if not differs:
            return Change(rid, "AWS::SNS::Subscription", "unchanged", label)

        def update(p):
            for k in differs:
                self.api.sns.set_subscription_attributes(SubscriptionArn=match["SubscriptionArn"], AttributeName=k,
                                                         AttributeValue=canonical(p[k]))
        return Change(rid, "AWS::SNS::Subscription", "update", "%s: %s" % (label, ", ".join(differs)), update)

    # AWS::Events::Rule (schedules)

    def plan_AWS_Events_Rule(self, rid, props, r):
        if "ScheduleExpression" not in props:
            raise DeployError("%s: only scheduled rules (ScheduleExpression) are supported; event patterns are not" % rid)
        targets = props.get("Targets") or []
        if len(targets) != 1 or ":lambda:" not in str(targets[0].get("Arn", ":lambda:")):
            raise DeployError("%s: a schedule needs exactly one target, a function" % rid)
        name = self.physical(rid, props.get("Name"), 64)
        self.resolver.refs[rid] = name
        self.resolver.atts[rid] = {"Arn": "arn:aws:events:%s:%s:rule/%s" % (self.region, self.account, name)}
        enabled = props.get("State", "ENABLED") == "ENABLED"
        target = targets[0]
        fn, q = function_and_qualifier(target["Arn"])
        if enabled:
            self.wanted_schedules.add(name)
        current = self.api.petrel("GET", "/petrel/schedules/" + name)
        desired = {"Name": name, "ScheduleExpression": props["ScheduleExpression"], "FunctionName": fn + (":" + q if q else ""),
                   "Description": props.get("Description", "")}
        if "Input" in target:
            desired["Input"] = target["Input"]

        def make(p):
            t = p["Targets"][0]
            f, qq = function_and_qualifier(t["Arn"])
            body = dict(desired, FunctionName=f + (":" + qq if qq else ""))
            if "Input" in t:
                body["Input"] = t["Input"]
            if current is not None:
                self.api.petrel("DELETE", "/petrel/schedules/" + name)
            out = self.api.petrel("POST", "/petrel/schedules", body)
            return "next at %s" % out.get("NextFire")

        label = "schedule %s: %s -> %s" % (name, props["ScheduleExpression"], desired["FunctionName"])
        if not enabled:
            if current is None:
                return Change(rid, "AWS::Events::Rule", "unchanged", label + " (disabled)")
            return Change(rid, "AWS::Events::Rule", "delete", label + " (disabled)",
                          lambda p: self.api.petrel("DELETE", "/petrel/schedules/" + name))
        if current is None:
            return Change(rid, "AWS::Events::Rule", "create", label, make)
        have_fn = ":".join(current["FunctionArn"].split(":")[6:])
        same = (current["ScheduleExpression"] == desired["ScheduleExpression"] and have_fn == desired["FunctionName"]
                and current.get("Input") == desired.get("Input")
                and (current.get("Description") or "") == desired["Description"])
        if same:
            return Change(rid, "AWS::Events::Rule", "unchanged", label)
        return Change(rid, "AWS::Events::Rule", "replace", label, make)

    # AWS::Lambda::EventInvokeConfig

    def plan_AWS_Lambda_EventInvokeConfig(self, rid, props, r):
        name, q = function_and_qualifier(props["FunctionName"])
        q = props.get("Qualifier", q)
        args = {"FunctionName": name, **({"Qualifier": q} if q and q != "$LATEST" else {})}
        self.resolver.refs[rid] = name
        keys = ("MaximumEventAgeInSeconds", "MaximumRetryAttempts", "DestinationConfig")
        current = missing(lambda: self.api.lam.get_function_event_invoke_config(**args))
        want = {k: props[k] for k in keys if k in props}
        label = "asynchronous invocation of %s" % (name + (":" + q if q else ""))
        if current is not None and all(canonical(pruned(current.get(k))) == canonical(pruned(v)) for k, v in want.items()):
            return Change(rid, "AWS::Lambda::EventInvokeConfig", "unchanged", label)
        return Change(rid, "AWS::Lambda::EventInvokeConfig", "create" if current is None else "update", label,
                      lambda p: self.api.lam.put_function_event_invoke_config(
                          **args, **{k: p[k] for k in keys if k in p}) and None)

    # AWS::Logs::LogGroup

    def plan_AWS_Logs_LogGroup(self, rid, props, r):
        name = self.physical(rid, props.get("LogGroupName"), 512)
        self.resolver.refs[rid] = name
        self.resolver.atts[rid] = {"Arn": "arn:aws:logs:%s:%s:log-group:%s:*" % (self.region, self.account, name)}
        groups = self.api.logs.describe_log_groups(logGroupNamePrefix=name).get("logGroups") or []
        current = next((g for g in groups if g["logGroupName"] == name), None)
        days = props.get("RetentionInDays")

        def put(p):
            if current is None:
                self.api.logs.create_log_group(logGroupName=name)
            if days is not None:
                self.api.logs.put_retention_policy(logGroupName=name, retentionInDays=int(days))
        if current is None:
            return Change(rid, "AWS::Logs::LogGroup", "create", "log group %s" % name, put)
        if days is not None and current.get("retentionInDays") != int(days):
            return Change(rid, "AWS::Logs::LogGroup", "update", "log group %s: RetentionInDays" % name, put)
        return Change(rid, "AWS::Logs::LogGroup", "unchanged", "log group %s" % name)

    # HttpApi and Api events: function URLs

    def api_routes(self):
        """Each function (or alias) an API Gateway definition integrates gets a function URL:
        every path and method of that API reaches the function, in the URL's payload (2.0)."""
        targets = {}
        apis = {}
        for rid, r in self.resources.items():
            if r.get("Type") not in ("AWS::ApiGatewayV2::Api", "AWS::ApiGateway::RestApi") or not self.included(rid):
                continue
            props = r.get("Properties") or {}
            body = props.get("Body") or props.get("DefinitionBody") or {}
            for method in walk_methods(body):
                integration = method.get("x-amazon-apigateway-integration") or {}
                uri = integration.get("uri")
                text = json.dumps(uri)
                m = re.search(r"functions/\$\{([A-Za-z0-9]+)(?:\.Arn)?\}/invocations", text)
                if not m or m.group(1) not in self.resources:
                    continue
                iam = "AWS_IAM" in json.dumps(method.get("security") or [])
                targets.setdefault(m.group(1), set()).add("AWS_IAM" if iam else "NONE")
                apis.setdefault(rid, set()).add(m.group(1))
        changes = []
        have_urls = {canonical(self.resources[x]["Properties"].get("TargetFunctionArn")): x for x in self.resources
                     if self.resources[x].get("Type") == "AWS::Lambda::Url" and self.included(x)}
        url_of = {}
        for target in sorted(targets):
            if canonical({"Ref": target}) in have_urls:
                url_of[target] = have_urls[canonical({"Ref": target})]
                continue
            auth = "NONE" if "NONE" in targets[target] else "AWS_IAM"
            rid = target + "ApiUrl"
            url_of[target] = rid
            self.resources[rid] = {"Type": "AWS::Lambda::Url",
                                   "Properties": {"TargetFunctionArn": {"Ref": target}, "AuthType": auth}}
            changes.append(self.plan_AWS_Lambda_Url(rid, self.resolver.value(self.resources[rid]["Properties"]),
                                                    self.resources[rid]))
            if auth == "NONE":
                # A public URL needs both statements, as SAM's FunctionUrlConfig makes them.
                for pid, extra in ((target + "ApiUrlPublic", {"Action": "lambda:InvokeFunctionUrl", "FunctionUrlAuthType": "NONE"}),
                                   (target + "ApiUrlInvoke", {"Action": "lambda:InvokeFunction", "InvokedViaFunctionUrl": True})):
                    self.resources[pid] = {"Type": "AWS::Lambda::Permission", "Properties": dict(
                        {"FunctionName": {"Ref": target}, "Principal": "*"}, **extra)}
                    changes.append(self.plan_AWS_Lambda_Permission(
                        pid, self.resolver.value(self.resources[pid]["Properties"]), self.resources[pid]))
        self.api_urls = {api: sorted(url_of[t] for t in ts) for api, ts in apis.items()}
        return changes

    # what the template no longer has

    def prune(self):
        changes = []
        stack_functions = {}
        for f in self.paged(self.api.lam.list_functions, "Functions"):
            tags = self.api.lam.list_tags(Resource=f["FunctionArn"]).get("Tags") or {}
            if tags.get(STACK_TAG) == self.stack:
                stack_functions[f["FunctionName"]] = tags.get(LOGICAL_TAG, "")
        kept = {self.resolver.refs.get(rid) for rid in self.function_ids if self.included(rid)}
        for name, rid in sorted(stack_functions.items()):
            if name in kept:
                continue
            changes.append(Change(rid or name, "AWS::Lambda::Function", "delete", "function %s" % name,
                                  lambda p, n=name: self.delete_function(n)))
        for name in sorted(kept - {None}):
            for m in self.mappings_of(name):
                fn, q = function_and_qualifier(m["FunctionArn"])
                key = (fn, q or None, m.get("EventSourceArn") or canonical(m.get("SelfManagedEventSource")))
                if key not in self.wanted_mappings:
                    changes.append(Change(m["UUID"], "AWS::Lambda::EventSourceMapping", "delete", "%s -> %s" % (
                        short(key[2]), fn + (":" + q if q else "")),
                        lambda p, u=m["UUID"]: self.api.lam.delete_event_source_mapping(UUID=u) and None))
            aliases = self.api.lam.list_aliases(FunctionName=name).get("Aliases") or [] if name in stack_functions else []
            wanted_aliases = {self.resolver.refs.get(rid) for rid, r in self.resources.items()
                              if r.get("Type") == "AWS::Lambda::Alias" and self.included(rid)}
            for a in aliases:
                if a["AliasArn"] not in wanted_aliases:
                    changes.append(Change(a["Name"], "AWS::Lambda::Alias", "delete", "alias %s of %s" % (a["Name"], name),
                                          lambda p, n=name, a=a["Name"]: self.api.lam.delete_alias(FunctionName=n, Name=a)))
            if name in stack_functions:
                changes += self.prune_permissions(name, [None] + [a["Name"] for a in aliases])
                wanted_urls = {self.resolver.refs.get(rid) for rid, r in self.resources.items()
                               if r.get("Type") == "AWS::Lambda::Url" and self.included(rid)}
                for u in self.api.lam.list_function_url_configs(FunctionName=name).get("FunctionUrlConfigs") or []:
                    if u["FunctionArn"] not in wanted_urls and u["FunctionArn"] + ":$LATEST" not in wanted_urls:
                        fn, q = function_and_qualifier(u["FunctionArn"])
                        changes.append(Change(short(u["FunctionArn"]), "AWS::Lambda::Url", "delete", u["FunctionUrl"],
                                              lambda p, n=fn, q=q: self.api.lam.delete_function_url_config(
                                                  FunctionName=n, **({"Qualifier": q} if q else {}))))
        ours = set(stack_functions) | (kept - {None})
        for s in (self.api.petrel("GET", "/petrel/schedules") or {}).get("Schedules", []):
            fn = s["FunctionArn"].split(":")[6]
            if s["Name"].startswith(self.stack + "-") and fn in ours and s["Name"] not in self.wanted_schedules:
                changes.append(Change(s["Name"], "AWS::Events::Rule", "delete", "schedule %s" % s["Name"],
                                      lambda p, n=s["Name"]: self.api.petrel("DELETE", "/petrel/schedules/" + n)))
        for topic in self.paged_topics():
            subs = self.subscriptions_of(topic)
            for s in subs:
                fn = s["Endpoint"].split(":")[6] if s["Protocol"] == "lambda" and s["Endpoint"].startswith("arn:") else None
                if fn in ours and (topic, s["Protocol"], s["Endpoint"]) not in self.wanted_subscriptions \
                        and s["SubscriptionArn"].startswith("arn:"):
                    changes.append(Change(short(topic), "AWS::SNS::Subscription", "delete", "%s -> %s" % (
                        short(topic), short(s["Endpoint"])), lambda p, a=s["SubscriptionArn"]: self.api.sns.unsubscribe(
                            SubscriptionArn=a) and None))
        wanted_queues = {self.resolver.atts.get(rid, {}).get("QueueName") for rid, r in self.resources.items()
                         if r.get("Type") == "AWS::SQS::Queue" and self.included(rid)}
        for url in self.api.sqs.list_queues().get("QueueUrls") or []:
            tags = self.api.sqs.list_queue_tags(QueueUrl=url).get("Tags") or {}
            if tags.get(STACK_TAG) == self.stack and url.rsplit("/", 1)[1] not in wanted_queues:
                changes.append(Change(tags.get(LOGICAL_TAG, url), "AWS::SQS::Queue", "delete", "queue %s" % url.rsplit("/", 1)[1],
                                      lambda p, u=url: self.api.sqs.delete_queue(QueueUrl=u) and None))
        wanted_topics = {self.resolver.refs.get(rid) for rid, r in self.resources.items()
                         if r.get("Type") == "AWS::SNS::Topic" and self.included(rid)}
        for topic in self.paged_topics():
            tags = {t["Key"]: t["Value"] for t in self.api.sns.list_tags_for_resource(ResourceArn=topic)["Tags"]}
            if tags.get(STACK_TAG) == self.stack and topic not in wanted_topics:
                changes.append(Change(tags.get(LOGICAL_TAG, topic), "AWS::SNS::Topic", "delete", "topic %s" % short(topic),
                                      lambda p, t=topic: self.api.sns.delete_topic(TopicArn=t) and None))
        return changes

    def prune_permissions(self, name, qualifiers):
        """The statements of a stack's function are the stack's: those the template no longer has go."""
        changes = []
        for q in qualifiers:
            args = {"FunctionName": name, **({"Qualifier": q} if q else {})}
            policy = missing(lambda: self.api.lam.get_policy(**args))
            for st in json.loads(policy["Policy"]).get("Statement", []) if policy else []:
                if (name, q, st.get("Sid")) not in self.wanted_permissions:
                    changes.append(Change(st.get("Sid"), "AWS::Lambda::Permission", "delete", "%s on %s" % (
                        st.get("Action"), name + (":" + q if q else "")),
                        lambda p, a=args, sid=st.get("Sid"): self.api.lam.remove_permission(StatementId=sid, **a) and None))
        return changes

    def paged_topics(self):
        out, token = [], None
        while True:
            page = self.api.sns.list_topics(**({"NextToken": token} if token else {}))
            out += [t["TopicArn"] for t in page.get("Topics") or []]
            token = page.get("NextToken")
            if not token:
                return out

    def delete_function(self, name):
        for m in self.mappings_of(name):
            self.api.lam.delete_event_source_mapping(UUID=m["UUID"])
        for s in (self.api.petrel("GET", "/petrel/schedules") or {}).get("Schedules", []):
            if s["FunctionArn"].split(":")[6] == name:
                self.api.petrel("DELETE", "/petrel/schedules/" + s["Name"])
        for topic in self.paged_topics():
            for s in self.subscriptions_of(topic):
                if s["Protocol"] == "lambda" and s["Endpoint"].split(":")[6:7] == [name] and s["SubscriptionArn"].startswith("arn:"):
                    self.api.sns.unsubscribe(SubscriptionArn=s["SubscriptionArn"])
        self.api.lam.delete_function(FunctionName=name)

    def outputs(self):
        out = {}
        for name, o in (self.template.get("Outputs") or {}).items():
            if o.get("Condition") and not self.resolver.condition(o["Condition"]):
                continue
            via = sorted(references(o.get("Value"), set()) & set(self.api_urls))
            if via:
                urls = [self.resolver.atts.get(u, {}).get("FunctionUrl", UNKNOWN) for api in via for u in self.api_urls[api]]
                out[name] = "(an API Gateway address; on Petrel the API's routes are served at %s)" % ", ".join(urls)
                continue
            try:
                out[name] = self.resolver.value(o.get("Value"))
            except (Unresolved, DeployError, KeyError) as e:
                out[name] = "(not available on Petrel: %s)" % e
        return out


def pruned(v):
    """A value without its empty parts (the APIs answer {} where a template says nothing)."""
    if isinstance(v, dict):
        out = {k: pruned(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x not in (None, {}, [])}
    return v


def walk_methods(body):
    paths = body.get("paths") if isinstance(body, dict) else None
    for methods in (paths or {}).values():
        if isinstance(methods, dict):
            for m in methods.values():
                if isinstance(m, dict):
                    yield m


def code_zip_inline(text):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("index.py", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        z.writestr(info, text)
    return buf.getvalue()


def describe_shift(shift):
    config, steps = shift
    if len(steps) == 1:
        return "%d%% for %d min, then all (%s)" % (steps[0][0], steps[0][1], config.split(".")[-1])
    return "%d%% more every %d min (%s)" % (steps[0][0], steps[0][1], config.split(".")[-1])


def short(arn):
    s = str(arn)
    return s.split(":", 5)[-1] if s.startswith("arn:") else s


def parse_parameters(template, overrides):
    given = {}
    for kv in overrides:
        if "=" not in kv:
            raise DeployError("--parameter takes Name=Value, not %s" % kv)
        k, v = kv.split("=", 1)
        given[k] = v
    declared = template.get("Parameters") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise DeployError("the template has no parameter %s" % ", ".join(unknown))
    out = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise DeployError("parameter %s has no default: give it with --parameter %s=VALUE" % (name, name))
        allowed = spec.get("AllowedValues")
        if allowed and str(value) not in [str(a) for a in allowed]:
            raise DeployError("parameter %s must be one of %s, not %s" % (name, ", ".join(map(str, allowed)), value))
        if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
            value = [x.strip() for x in value.split(",")]
        out[name] = value
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="petrel deploy --sam", description="Apply an AWS SAM template to Petrel.")
    p.add_argument("template")
    p.add_argument("--stack", help="the stack's name (default: the template's folder name)")
    p.add_argument("--parameter", action="append", default=[], help="Name=Value for a template parameter (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="show the plan and change nothing")
    args = p.parse_args(argv)

    endpoint = os.environ.get("PETREL_ENDPOINT", "http://127.0.0.1:9000")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    path = os.path.abspath(args.template)
    stack = args.stack or os.path.basename(os.path.dirname(path))
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,127}", stack):
        raise DeployError("the stack name %r must start with a letter and have only letters, digits and '-' "
                          "(give --stack NAME)" % stack)

    def out(text="", end="\n"):
        sys.stdout.write(text + end)
        sys.stdout.flush()

    template = load_template(path)
    artifacts = stage_artifacts(template, os.path.dirname(path))
    parameters = parse_parameters(template, args.parameter)
    cfn = translate(template, parameters, region)
    api = Petrel(endpoint, region)
    d = Deployment(api, stack, cfn, artifacts, parameters, out)
    changes = d.plan()

    out("Stack %s (%s) on %s, account %s:" % (stack, os.path.relpath(path), endpoint, d.account))
    width = max(len(c.rid) for c in changes)
    kinds = max(len(c.kind) for c in changes)
    for c in changes:
        out("  %s %-*s  %-*s  %s" % (SYMBOLS[c.action], width, c.rid, kinds, c.kind, c.summary))
    for w in d.warnings:
        out("  note: " + w)
    counts = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    todo = [c for c in changes if c.action not in ("unchanged", "none")]
    out("Plan: %d to create, %d to update, %d to delete, %d unchanged." % (
        counts.get("create", 0), counts.get("update", 0) + counts.get("replace", 0) + counts.get("shift", 0),
        counts.get("delete", 0), counts.get("unchanged", 0)))
    if args.dry_run:
        return 0
    if not todo:
        out("No changes.")
    else:
        d.apply(todo)
        out("Deployed stack %s." % stack)
    for k, v in d.outputs().items():
        out("Output %s = %s" % (k, v))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DeployError as e:
        sys.stderr.write("petrel deploy --sam: %s\n" % e)
        sys.exit(1)
    except Unresolved as e:
        sys.stderr.write("petrel deploy --sam: %s is not known when it is needed\n" % e)
        sys.exit(1)
    except Exception as e:
        if error_code(e):
            sys.stderr.write("petrel deploy --sam: %s\n" % e)
            sys.exit(1)
        raise
