package com.amazonaws.services.lambda.runtime;

/** A handler of events mapped from JSON to I, whose result O is written back as JSON (Lambda's interface, by Petrel). */
public interface RequestHandler<I, O> {
    O handleRequest(I input, Context context);
}
