package com.amazonaws.services.lambda.runtime;

/** The caller's Amazon Cognito identity, when the invocation carried one (Lambda's interface, by Petrel). */
public interface CognitoIdentity {
    String getIdentityId();
    String getIdentityPoolId();
}
