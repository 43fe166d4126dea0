-- What every request the public listener receives must pass before it goes
-- anywhere, in this order:
--
-- 1. A token is configured; else 503 on every route (the gateway fails closed).
-- 2. Its request line and headers fit MAX_HEADER_BYTES; else 431.
-- 3. Its bearer token is right; else 401.
-- 4. Its path and query are UTF-8 once percent-decoded; else 400.
--
-- MAX_HEADER_BYTES and HEADERS_TOO_LARGE (its message) are not defined here:
-- gateway/render.py puts their definitions above this file when it inlines it
-- into the configuration.
--
-- The token is read from the process environment (PRISM_API_TOKEN, set by
-- `python -m gateway`), never from the rendered configuration, so it is absent
-- from the config file, the admin /config_dump and the logs.
--
-- A route opts out of the token check (not of the 503) with route metadata
--   metadata: {filter_metadata: {envoy.filters.http.lua: {auth: none}}}

local TOKEN = os.getenv("PRISM_API_TOKEN") or ""

-- The reply is an Envoy local reply: local_reply_config turns it into JSON for
-- HTTP clients, and Envoy itself into a trailers-only gRPC status for gRPC
-- clients (401 -> UNAUTHENTICATED, 503 -> UNAVAILABLE). Envoy maps the other
-- statuses to UNKNOWN, so for gRPC clients they name their own code.
local GRPC_STATUS = { [400] = "3", [431] = "8" } -- INVALID_ARGUMENT, RESOURCE_EXHAUSTED

local function reject(handle, status, message)
  local headers = { [":status"] = tostring(status) }
  local content_type = handle:headers():get("content-type") or ""
  if content_type:sub(1, 16) == "application/grpc" then
    headers["grpc-status"] = GRPC_STATUS[status]
  end
  if status == 401 then
    headers["www-authenticate"] = 'Bearer realm="prism"'
  end
  handle:respond(headers, message)
end

-- Counted as Envoy counts against max_request_headers_kb: names and values, the
-- request line's parts (:method, :path...) included. The codec's own limit is
-- higher and stops a request before any filter, with no answer a gRPC client
-- can read; this one answers everyone.
local function header_bytes(headers)
  local total = 0
  for name, value in pairs(headers) do
    total = total + #name + #value
  end
  return total
end

-- Equal iff same length and same bytes. The running time depends only on the
-- length of the presented value, never on the token or on where they differ:
-- every byte is compared and the results are OR-ed together, and the length
-- check is folded into the same accumulator.
local function same_token(given)
  local expected_length = #TOKEN
  local difference = bit.bxor(#given, expected_length)
  for i = 1, #given do
    local expected = TOKEN:byte((i - 1) % expected_length + 1)
    difference = bit.bor(difference, bit.bxor(given:byte(i), expected))
  end
  return difference == 0
end

-- Well-formed UTF-8 (Unicode table 3-7): no overlong forms, no surrogates,
-- nothing above U+10FFFF. As strict as protobuf's own check.
local function utf8_valid(text)
  local i, n = 1, #text
  while i <= n do
    local lead = text:byte(i)
    local more, low, high
    if lead < 0x80 then
      more = 0
    elseif lead >= 0xC2 and lead <= 0xDF then
      more, low, high = 1, 0x80, 0xBF
    elseif lead == 0xE0 then
      more, low, high = 2, 0xA0, 0xBF
    elseif lead == 0xED then
      more, low, high = 2, 0x80, 0x9F
    elseif lead >= 0xE1 and lead <= 0xEF then
      more, low, high = 2, 0x80, 0xBF
    elseif lead == 0xF0 then
      more, low, high = 3, 0x90, 0xBF
    elseif lead >= 0xF1 and lead <= 0xF3 then
      more, low, high = 3, 0x80, 0xBF
    elseif lead == 0xF4 then
      more, low, high = 3, 0x80, 0x8F
    else
      return false
    end
    if i + more > n then
      return false
    end
    for k = 1, more do
      local byte = text:byte(i + k)
      if k == 1 and (byte < low or byte > high) then
        return false
      end
      if byte < 0x80 or byte > 0xBF then
        return false
      end
    end
    i = i + more + 1
  end
  return true
end

-- The transcoder copies path segments and query values, percent-decoded, into
-- protobuf string fields, and a gRPC server refuses a message whose strings are
-- not UTF-8 as a whole, with an internal error (a 500). An escape that is not
-- %XX stays as it is, as the transcoder leaves it.
local function decodes_to_utf8(path)
  local decoded = path
  if path:find("%", 1, true) then
    decoded = path:gsub("%%(%x%x)", function(hex)
      return string.char(tonumber(hex, 16))
    end)
  end
  return not decoded:find("[\128-\255]") or utf8_valid(decoded)
end

local NOT_UTF8 = "the request path or query holds a character that is not allowed:"
  .. " percent-encoded bytes that are not UTF-8"

function envoy_on_request(handle)
  if TOKEN == "" then
    reject(handle, 503, "the gateway has no API token configured")
    return
  end
  local headers = handle:headers()
  if header_bytes(headers) > MAX_HEADER_BYTES then
    reject(handle, 431, HEADERS_TOO_LARGE)
    return
  end
  if handle:metadata():get("auth") ~= "none" then
    local authorization = headers:get("authorization")
    -- RFC 7235: the scheme name is case-insensitive.
    local given = authorization and authorization:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +([^ ]+) *$")
    if given == nil or not same_token(given) then
      reject(handle, 401, "missing or invalid bearer token")
      return
    end
  end
  if not decodes_to_utf8(headers:get(":path") or "") then
    reject(handle, 400, NOT_UTF8)
  end
end
