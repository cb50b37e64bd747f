import PetrelAPI
import PetrelCore
import Testing

@Suite("Function names and settings")
struct FunctionValidationTests {
    @Test("FunctionName: a name, a partial ARN or a full ARN, with or without a qualifier")
    func references() throws {
        let full = try FunctionReference(parsing: "arn:aws:lambda:eu-west-2:123456789012:function:my-fn:$LATEST")
        #expect(full.name == "my-fn" && full.qualifier == "$LATEST" && full.account == "123456789012" && full.region == "eu-west-2")
        let partial = try FunctionReference(parsing: "123456789012:function:my_fn")
        #expect(partial.name == "my_fn" && partial.account == "123456789012" && partial.qualifier == nil)
        let plain = try FunctionReference(parsing: "fn:prod")
        #expect(plain.name == "fn" && plain.qualifier == "prod")
        for bad in [
            "", "a b", String(repeating: "x", count: 65), "arn:aws:lambda:us-east-1:12:function:x",
            "arn:aws:s3:us-east-1:123456789012:function:x", "x:y:z", "fn:", "../x", "fn:$NOPE",
        ] {
            #expect(throws: DomainError.self, "\(bad) must be refused") { try FunctionReference(parsing: bad) }
        }
    }

    @Test("settings are checked in Lambda's words; reserved and oversized environments are refused")
    func settings() throws {
        try FunctionSettings(
            runtime: "python3.11", handler: "app.handler", role: "arn:aws:iam::123456789012:role/x",
            memoryMB: 128, timeoutSeconds: 900, ephemeralStorageMB: 10_240, environment: ["A_1": "v"]
        ).validate()
        func code(_ s: FunctionSettings) -> String? {
            // The domain's error, as the API edge names it.
            do {
                try s.validate()
                return nil
            } catch let e as DomainError { return LambdaError.from(e).code.rawValue } catch { return "\(error)" }
        }
        #expect(code(FunctionSettings(memoryMB: 127)) == "ValidationException")
        #expect(code(FunctionSettings(memoryMB: 10_241)) == "ValidationException")
        #expect(code(FunctionSettings(timeoutSeconds: 0)) == "ValidationException")
        #expect(code(FunctionSettings(ephemeralStorageMB: 511)) == "ValidationException")
        #expect(code(FunctionSettings(runtime: "python2.7")) == "InvalidParameterValueException")
        #expect(code(FunctionSettings(role: "arn:aws:iam::123:role/x")) == "ValidationException")
        #expect(code(FunctionSettings(handler: "has space")) == "ValidationException")
        #expect(code(FunctionSettings(environment: ["AWS_REGION": "x"])) == "InvalidParameterValueException")
        #expect(code(FunctionSettings(environment: ["1BAD": "x"])) == "ValidationException")
        #expect(code(FunctionSettings(environment: ["BIG": String(repeating: "x", count: 4_100)])) == "InvalidParameterValueException")
        // Exactly at the limit is fine: {"K":"…"} measured as JSON.
        let fits = String(repeating: "x", count: FunctionSettings.environmentLimitBytes - 9)
        #expect(code(FunctionSettings(environment: ["KK": fits])) == nil)
        #expect(code(FunctionSettings(environment: ["KK": fits + "x"])) == "InvalidParameterValueException")
    }
}
