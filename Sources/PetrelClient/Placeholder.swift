enum ClientPlaceholder {}
import AsyncHTTPClient
