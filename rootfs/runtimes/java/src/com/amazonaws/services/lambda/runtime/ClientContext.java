package com.amazonaws.services.lambda.runtime;

import java.util.Map;

/** The mobile client's context, when the invocation carried one (Lambda's interface, by Petrel). */
public interface ClientContext {
    Client getClient();
    Map<String, String> getCustom();
    Map<String, String> getEnvironment();

    /** The client application. */
    interface Client {
        String getInstallationId();
        String getAppTitle();
        String getAppVersionName();
        String getAppVersionCode();
        String getAppPackageName();
    }
}
