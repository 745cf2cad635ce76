package kmip

import "github.com/keyflow/keyflow/workers/kmip/ttlv"

// KMIP 1.x tags (KMIP 1.4 specification, section 9.1.3.1), those the
// server reads or writes.
const (
	tagActivationDate              ttlv.Tag = 0x420001
	tagAttribute                   ttlv.Tag = 0x420008
	tagAttributeIndex              ttlv.Tag = 0x420009
	tagAttributeName               ttlv.Tag = 0x42000A
	tagAttributeValue              ttlv.Tag = 0x42000B
	tagBatchCount                  ttlv.Tag = 0x42000D
	tagBatchItem                   ttlv.Tag = 0x42000F
	tagBlockCipherMode             ttlv.Tag = 0x420011
	tagCompromiseOccurrence        ttlv.Tag = 0x420021
	tagCryptographicAlgorithm      ttlv.Tag = 0x420028
	tagCryptographicLength         ttlv.Tag = 0x42002A
	tagCryptographicParameters     ttlv.Tag = 0x42002B
	tagCryptographicUsageMask      ttlv.Tag = 0x42002C
	tagDeactivationDate            ttlv.Tag = 0x42002F
	tagDestroyDate                 ttlv.Tag = 0x420033
	tagInitialDate                 ttlv.Tag = 0x420039
	tagIVCounterNonce              ttlv.Tag = 0x42003D
	tagKeyBlock                    ttlv.Tag = 0x420040
	tagKeyFormatType               ttlv.Tag = 0x420042
	tagKeyMaterial                 ttlv.Tag = 0x420043
	tagKeyValue                    ttlv.Tag = 0x420045
	tagLastChangeDate              ttlv.Tag = 0x420048
	tagMaximumItems                ttlv.Tag = 0x42004F
	tagName                        ttlv.Tag = 0x420053
	tagNameType                    ttlv.Tag = 0x420054
	tagNameValue                   ttlv.Tag = 0x420055
	tagObjectType                  ttlv.Tag = 0x420057
	tagOperation                   ttlv.Tag = 0x42005C
	tagOperationPolicyName         ttlv.Tag = 0x42005D
	tagProtocolVersion             ttlv.Tag = 0x420069
	tagProtocolVersionMajor        ttlv.Tag = 0x42006A
	tagProtocolVersionMinor        ttlv.Tag = 0x42006B
	tagQueryFunction               ttlv.Tag = 0x420074
	tagRequestHeader               ttlv.Tag = 0x420077
	tagRequestMessage              ttlv.Tag = 0x420078
	tagRequestPayload              ttlv.Tag = 0x420079
	tagResponseHeader              ttlv.Tag = 0x42007A
	tagResponseMessage             ttlv.Tag = 0x42007B
	tagResponsePayload             ttlv.Tag = 0x42007C
	tagResultMessage               ttlv.Tag = 0x42007D
	tagResultReason                ttlv.Tag = 0x42007E
	tagResultStatus                ttlv.Tag = 0x42007F
	tagRevocationMessage           ttlv.Tag = 0x420080
	tagRevocationReason            ttlv.Tag = 0x420081
	tagRevocationReasonCode        ttlv.Tag = 0x420082
	tagSecretData                  ttlv.Tag = 0x420085
	tagSecretDataType              ttlv.Tag = 0x420086
	tagServerInformation           ttlv.Tag = 0x420088
	tagState                       ttlv.Tag = 0x42008D
	tagSymmetricKey                ttlv.Tag = 0x42008F
	tagTemplateAttribute           ttlv.Tag = 0x420091
	tagTimeStamp                   ttlv.Tag = 0x420092
	tagUniqueBatchItemID           ttlv.Tag = 0x420093
	tagUniqueIdentifier            ttlv.Tag = 0x420094
	tagVendorIdentification        ttlv.Tag = 0x42009D
	tagValidityIndicator           ttlv.Tag = 0x42009B
	tagCommonTemplateAttribute     ttlv.Tag = 0x42001F
	tagHashingAlgorithm            ttlv.Tag = 0x420038
	tagPaddingMethod               ttlv.Tag = 0x42005F
	tagPrivateKeyTemplateAttribute ttlv.Tag = 0x420065
	tagPrivateKeyUniqueIdentifier  ttlv.Tag = 0x420066
	tagPublicKey                   ttlv.Tag = 0x42006D
	tagPublicKeyTemplateAttribute  ttlv.Tag = 0x42006E
	tagPublicKeyUniqueIdentifier   ttlv.Tag = 0x42006F
	tagRecommendedCurve            ttlv.Tag = 0x420075
	tagDigitalSignatureAlgorithm   ttlv.Tag = 0x4200AE
	tagSignatureData               ttlv.Tag = 0x4200C3
	tagData                        ttlv.Tag = 0x4200C2
	tagMACData                     ttlv.Tag = 0x4200C6
	tagOffsetItems                 ttlv.Tag = 0x4200D4
	tagLocatedItems                ttlv.Tag = 0x4200D5
)

// Operations (9.1.3.2.27).
const (
	opCreate           uint32 = 0x01
	opCreateKeyPair    uint32 = 0x02
	opSign             uint32 = 0x21
	opSignatureVerify  uint32 = 0x22
	opRegister         uint32 = 0x03
	opRekey            uint32 = 0x04
	opLocate           uint32 = 0x08
	opGet              uint32 = 0x0A
	opGetAttributes    uint32 = 0x0B
	opGetAttributeList uint32 = 0x0C
	opAddAttribute     uint32 = 0x0D
	opModifyAttribute  uint32 = 0x0E
	opDeleteAttribute  uint32 = 0x0F
	opActivate         uint32 = 0x12
	opRevoke           uint32 = 0x13
	opDestroy          uint32 = 0x14
	opQuery            uint32 = 0x18
	opDiscoverVersions uint32 = 0x1E
	opEncrypt          uint32 = 0x1F
	opDecrypt          uint32 = 0x20
	opMAC              uint32 = 0x23
	opMACVerify        uint32 = 0x24
)

// Result status and reasons (9.1.3.2.28, 9.1.3.2.29), KMIP 1.x values only.
const (
	statusSuccess         uint32 = 0
	statusOperationFailed uint32 = 1

	reasonItemNotFound          uint32 = 0x01
	reasonResponseTooLarge      uint32 = 0x02
	reasonInvalidMessage        uint32 = 0x04
	reasonOperationNotSupported uint32 = 0x05
	reasonMissingData           uint32 = 0x06
	reasonInvalidField          uint32 = 0x07
	reasonFeatureNotSupported   uint32 = 0x08
	reasonCryptographicFailure  uint32 = 0x0A
	reasonIllegalOperation      uint32 = 0x0B
	reasonPermissionDenied      uint32 = 0x0C
	reasonKeyFormatNotSupported uint32 = 0x10
	reasonGeneralFailure        uint32 = 0x100
)

// Object types, states, algorithms and other enumerations.
const (
	objSymmetricKey uint32 = 0x02
	objPublicKey    uint32 = 0x03
	objPrivateKey   uint32 = 0x04
	objSecretData   uint32 = 0x07

	stPreActive            uint32 = 1
	stActive               uint32 = 2
	stDeactivated          uint32 = 3
	stCompromised          uint32 = 4
	stDestroyed            uint32 = 5
	stDestroyedCompromised uint32 = 6

	algAES   uint32 = 0x03
	algRSA   uint32 = 0x04
	algECDSA uint32 = 0x06
	algEC    uint32 = 0x1A

	curveP256 uint32 = 0x07
	curveP384 uint32 = 0x0A

	hashSHA256 uint32 = 0x06
	hashSHA384 uint32 = 0x07
	hashSHA512 uint32 = 0x08

	padPKCS1v15 uint32 = 0x08
	padPSS      uint32 = 0x0A

	dsaRSASSAPSS   uint32 = 0x08
	dsaSHA256RSA   uint32 = 0x05
	dsaSHA384RSA   uint32 = 0x06
	dsaSHA512RSA   uint32 = 0x07
	dsaECDSASHA256 uint32 = 0x0E
	dsaECDSASHA384 uint32 = 0x0F
	dsaECDSASHA512 uint32 = 0x10

	validityValid   uint32 = 1
	validityInvalid uint32 = 2
	algHMACSHA256   uint32 = 0x09

	fmtRaw                     uint32 = 0x01
	fmtX509                    uint32 = 0x05
	fmtTransparentSymmetricKey uint32 = 0x07

	modeGCM uint32 = 0x09

	revokeKeyCompromise uint32 = 0x02
	revokeCACompromise  uint32 = 0x03

	queryOperations        uint32 = 1
	queryObjects           uint32 = 2
	queryServerInformation uint32 = 3

	usageSign        int32 = 0x01
	usageVerify      int32 = 0x02
	usageEncrypt     int32 = 0x04
	usageDecrypt     int32 = 0x08
	usageMACGenerate int32 = 0x80
	usageMACVerify   int32 = 0x100

	nameTypeText uint32 = 1
)

// publicSuffix turns a key pair's key ID into its public key's Unique
// Identifier: the private key is the key ID itself.
const publicSuffix = "/public"

// ExportablePolicy is the Operation Policy Name that makes a key
// exportable; the custom attribute x-keyflow-exportable=true does too.
const (
	ExportablePolicy    = "exportable"
	ExportableAttribute = "x-keyflow-exportable"
)
