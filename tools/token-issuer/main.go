// token-issuer is the test bed's token server for a registry configured with `auth: token`
// (CNCF distribution). It checks HTTP basic credentials against a fixed account table and
// issues ES256 JWTs whose access list is the requested scope cut down to what the grant table
// allows the account: like production token servers, it never refuses a scope, it grants less,
// and the registry then refuses the request it does not cover.
//
// The grants file is read on every request, so a test may rewrite it. One rule a line:
//
//	account NAME PASSWORD LIFETIME   a login; its tokens are accepted for LIFETIME (Go duration)
//	grant NAME TYPE PATTERN ACTIONS  e.g. `grant ci repository team/* pull,delete`; `*` in
//	                                 PATTERN matches any run of characters, `/` included; the
//	                                 first rule of an account whose pattern matches decides
//
// Tokens carry the signing certificate in `x5c`; the registry's `rootcertbundle` is that
// (self-signed) certificate.
//
// Distribution accepts a token until 60 s after its `exp` (clock-skew leeway), so `exp` is
// set that much before the end of LIFETIME: a LIFETIME of 3s makes tokens the registry
// refuses 3 s after they were issued, which is what renewal tests need.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"
)

// The registry's tolerance past `exp` (distribution's registry/auth/token Leeway).
const registryLeeway = 60 * time.Second

type account struct {
	password string
	lifetime time.Duration
}

type grant struct {
	account, typ string
	pattern      *regexp.Regexp
	actions      []string
}

type table struct {
	accounts map[string]account
	grants   []grant
}

func globRegexp(p string) (*regexp.Regexp, error) {
	parts := strings.Split(p, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.Compile("^" + strings.Join(parts, ".*") + "$")
}

func loadTable(path string) (*table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &table{accounts: map[string]account{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		switch {
		case fields[0] == "account" && len(fields) == 4:
			d, err := time.ParseDuration(fields[3])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: lifetime: %v", path, n, err)
			}
			t.accounts[fields[1]] = account{password: fields[2], lifetime: d}
		case fields[0] == "grant" && len(fields) == 5:
			re, err := globRegexp(fields[3])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: pattern: %v", path, n, err)
			}
			t.grants = append(t.grants, grant{account: fields[1], typ: fields[2], pattern: re, actions: strings.Split(fields[4], ",")})
		default:
			return nil, fmt.Errorf("%s:%d: want `account NAME PASSWORD LIFETIME` or `grant NAME TYPE PATTERN ACTIONS`", path, n)
		}
	}
	return t, sc.Err()
}

// allowed is what the first matching rule grants `who` on a resource.
func (t *table) allowed(who, typ, name string) []string {
	for _, g := range t.grants {
		if g.account == who && g.typ == typ && g.pattern.MatchString(name) {
			return g.actions
		}
	}
	return nil
}

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// parseScope reads `type:name:action,action`; a name may hold a port's colon, so the
// type is the first field and the actions the last.
func parseScope(s string) (access, bool) {
	first := strings.Index(s, ":")
	last := strings.LastIndex(s, ":")
	if first < 0 || first == last {
		return access{}, false
	}
	return access{Type: s[:first], Name: s[first+1 : last], Actions: strings.Split(s[last+1:], ",")}, true
}

func intersect(asked, granted []string) []string {
	out := []string{}
	for _, a := range asked {
		for _, g := range granted {
			if g == a || g == "*" {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

type issuer struct {
	grants  string
	name    string
	service string
	key     *ecdsa.PrivateKey
	certDER []byte
	issued  atomic.Int64
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (is *issuer) sign(claims any) (string, error) {
	header, err := json.Marshal(map[string]any{
		"typ": "JWT", "alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(is.certDER)},
	})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, is.key, digest[:])
	if err != nil {
		return "", err
	}
	// JWS ES256 signatures are R and S as fixed 32-byte big-endian numbers, not DER.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + b64(sig), nil
}

func (is *issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	t, err := loadTable(is.grants)
	if err != nil {
		log.Printf("grants: %v", err)
		http.Error(w, "grant table unreadable", http.StatusInternalServerError)
		return
	}
	user, pass, ok := r.BasicAuth()
	acct, known := t.accounts[user]
	if !ok || !known || subtle.ConstantTimeCompare([]byte(pass), []byte(acct.password)) != 1 {
		log.Printf("refused %q", user)
		w.Header().Set("WWW-Authenticate", `Basic realm="retainer-testbed-tokens"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}`)
		return
	}
	if svc := r.URL.Query().Get("service"); svc != "" && svc != is.service {
		http.Error(w, "unknown service", http.StatusBadRequest)
		return
	}
	grants := []access{}
	for _, raw := range r.URL.Query()["scope"] {
		for _, one := range strings.Fields(raw) {
			a, ok := parseScope(one)
			if !ok {
				http.Error(w, "malformed scope "+one, http.StatusBadRequest)
				return
			}
			a.Actions = intersect(a.Actions, t.allowed(user, a.Type, a.Name))
			grants = append(grants, a)
		}
	}
	now := time.Now()
	jti := make([]byte, 12)
	if _, err := rand.Read(jti); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	token, err := is.sign(map[string]any{
		"iss": is.name, "sub": user, "aud": is.service,
		"iat": now.Unix(), "nbf": now.Unix(),
		"exp":    now.Add(acct.lifetime - registryLeeway).Unix(),
		"jti":    b64(jti),
		"access": grants,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	n := is.issued.Add(1)
	log.Printf("token %d for %s: %v", n, user, grants)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": token, "access_token": token,
		"expires_in": int(acct.lifetime.Seconds()), "issued_at": now.UTC().Format(time.RFC3339),
	})
}

func readPEM(path, want string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatalf("reading %s: %v", path, err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			log.Fatalf("%s: no %s block", path, want)
		}
		if strings.HasSuffix(block.Type, want) {
			return block.Bytes
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	grants := flag.String("grants", "", "the account and grant table (see the package comment)")
	keyPath := flag.String("key", "", "EC P-256 private key, PEM (PKCS#8 or SEC 1)")
	certPath := flag.String("cert", "", "the key's certificate, PEM: the registry's rootcertbundle")
	name := flag.String("issuer", "retainer-testbed-issuer", "the `iss` claim")
	service := flag.String("service", "retainer-testbed-registry", "the `aud` claim; the registry's service")
	flag.Parse()
	if _, err := loadTable(*grants); err != nil {
		log.Fatalf("grants: %v", err)
	}
	der := readPEM(*keyPath, "PRIVATE KEY")
	var key *ecdsa.PrivateKey
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			log.Fatalf("%s: not an EC key", *keyPath)
		}
		key = ek
	} else if ek, err := x509.ParseECPrivateKey(der); err == nil {
		key = ek
	} else {
		log.Fatalf("%s: %v", *keyPath, err)
	}
	if key.Curve.Params().BitSize != 256 {
		log.Fatalf("%s: ES256 needs a P-256 key", *keyPath)
	}
	is := &issuer{grants: *grants, name: *name, service: *service, key: key, certDER: readPEM(*certPath, "CERTIFICATE")}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", is.serveToken)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	// `issued` lets a test count renewals without parsing the log.
	mux.HandleFunc("/issued", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, is.issued.Load()) })
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
