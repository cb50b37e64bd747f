package com.amazonaws.services.lambda.runtime;

/** Writes to the function's log stream (Lambda's interface, by Petrel). */
public interface LambdaLogger {
    void log(String message);
    void log(byte[] message);
}
