/*
 * tls_primitives.c - CPU time of the public-key operations of one full TLS handshake, as Debian's mbedTLS
 * (the library luamta links) does them: an ECDHE key share and shared secret (X25519, P-256), an ECDSA P-256
 * signature and an RSA-2048 signature. bench/tls-primitives builds and runs it next to `openssl speed` for the
 * same operations, so that the cost of the library can be told from the cost of luamta (bench/tls.md).
 *
 *	tls_primitives [ROUNDS]		prints one "name ms" line per operation (CPU time per operation)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/rsa.h>
#include <mbedtls/version.h>

static mbedtls_ctr_drbg_context	 drbg;

static double
cpu_now(void)
{
	struct timespec	 t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ecdhe - what a server does per handshake: make its key share, then the shared secret with the client's. */
static void
ecdhe(mbedtls_ecp_group_id id, const char *name, int rounds)
{
	mbedtls_ecp_group	 g;
	mbedtls_mpi		 d, peer_d, z;
	mbedtls_ecp_point	 q, peer_q;
	double			 t0, t1, t2;
	int			 i;

	mbedtls_ecp_group_init(&g);
	mbedtls_mpi_init(&d);
	mbedtls_mpi_init(&peer_d);
	mbedtls_mpi_init(&z);
	mbedtls_ecp_point_init(&q);
	mbedtls_ecp_point_init(&peer_q);
	if (mbedtls_ecp_group_load(&g, id) != 0 ||
	    mbedtls_ecdh_gen_public(&g, &peer_d, &peer_q, mbedtls_ctr_drbg_random, &drbg) != 0) {
		fprintf(stderr, "tls_primitives: %s is not available\n", name);
		exit(1);
	}
	t0 = cpu_now();
	for (i = 0; i < rounds; i++)
		mbedtls_ecdh_gen_public(&g, &d, &q, mbedtls_ctr_drbg_random, &drbg);
	t1 = cpu_now();
	for (i = 0; i < rounds; i++)
		mbedtls_ecdh_compute_shared(&g, &z, &peer_q, &d, mbedtls_ctr_drbg_random, &drbg);
	t2 = cpu_now();
	printf("ecdhe-%s-share %.3f\n", name, (t1 - t0) * 1e3 / rounds);
	printf("ecdhe-%s-secret %.3f\n", name, (t2 - t1) * 1e3 / rounds);
	mbedtls_ecp_group_free(&g);
	mbedtls_mpi_free(&d);
	mbedtls_mpi_free(&peer_d);
	mbedtls_mpi_free(&z);
	mbedtls_ecp_point_free(&q);
	mbedtls_ecp_point_free(&peer_q);
}

int
main(int argc, char **argv)
{
	mbedtls_entropy_context	 entropy;
	mbedtls_ecdsa_context	 ec;
	mbedtls_rsa_context	 rsa;
	unsigned char		 hash[32] = { 1 }, sig[MBEDTLS_ECDSA_MAX_LEN > 512 ? MBEDTLS_ECDSA_MAX_LEN : 512];
	size_t			 siglen;
	int			 rounds = argc > 1 ? atoi(argv[1]) : 200, i;
	double			 t0;

	if (rounds < 1)
		rounds = 1;
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0) != 0) {
		fprintf(stderr, "tls_primitives: cannot seed the random generator\n");
		return 1;
	}
	printf("mbedtls %s\n", MBEDTLS_VERSION_STRING);
	ecdhe(MBEDTLS_ECP_DP_CURVE25519, "x25519", rounds);
	ecdhe(MBEDTLS_ECP_DP_SECP256R1, "p256", rounds);

	mbedtls_ecdsa_init(&ec);
	mbedtls_ecdsa_genkey(&ec, MBEDTLS_ECP_DP_SECP256R1, mbedtls_ctr_drbg_random, &drbg);
	t0 = cpu_now();
	for (i = 0; i < rounds; i++)
#if MBEDTLS_VERSION_MAJOR >= 3
		mbedtls_ecdsa_write_signature(&ec, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, sizeof(sig), &siglen,
		    mbedtls_ctr_drbg_random, &drbg);
#else
		mbedtls_ecdsa_write_signature(&ec, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, &siglen,
		    mbedtls_ctr_drbg_random, &drbg);
#endif
	printf("sign-ecdsa-p256 %.3f\n", (cpu_now() - t0) * 1e3 / rounds);
	mbedtls_ecdsa_free(&ec);

#if MBEDTLS_VERSION_MAJOR >= 3
	mbedtls_rsa_init(&rsa);
#else
	mbedtls_rsa_init(&rsa, MBEDTLS_RSA_PKCS_V15, 0);
#endif
	mbedtls_rsa_gen_key(&rsa, mbedtls_ctr_drbg_random, &drbg, 2048, 65537);
	t0 = cpu_now();
	for (i = 0; i < rounds / 4 + 1; i++)
#if MBEDTLS_VERSION_MAJOR >= 3
		mbedtls_rsa_pkcs1_sign(&rsa, mbedtls_ctr_drbg_random, &drbg, MBEDTLS_MD_SHA256, 32, hash, sig);
#else
		mbedtls_rsa_pkcs1_sign(&rsa, mbedtls_ctr_drbg_random, &drbg, MBEDTLS_RSA_PRIVATE, MBEDTLS_MD_SHA256,
		    32, hash, sig);
#endif
	printf("sign-rsa-2048 %.3f\n", (cpu_now() - t0) * 1e3 / (rounds / 4 + 1));
	mbedtls_rsa_free(&rsa);
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&entropy);
	return 0;
}
